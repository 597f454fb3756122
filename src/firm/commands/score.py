"""``firm score``: judge one edit, one generation, or a jsonl of them, and print verdicts and the reward as JSON.

Examples::

    firm score --model VisionXLab/FIRM-Edit-8B --source in.png --image out.png --instruction "Add a hat"
    firm score --model ./my-critic --image gen.png --prompt "two red cubes" --dimensions instruction,quality
    firm score --critic openai --base-url http://127.0.0.1:8000/v1 --model firm-edit ...
    firm score --model ./my-critic --input batch.jsonl --output scored.jsonl
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from firm.commands import UsageError

EDIT_DIMENSIONS = ("execution", "consistency")
GEN_DIMENSIONS = ("instruction", "quality")
DEFAULT_REWARD = {"edit": "cme", "gen": "qma"}

# CLI flag -> critic __init__ argument; passed only when given, and only to critics that take it.
CRITIC_FLAGS = (
    "model", "base_url", "device", "dtype", "max_new_tokens", "max_pixels", "batch_size", "templates", "samples",
    "temperature",
)  # fmt: skip


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "score",
        help="judge an edit or a generation with a critic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to judge (one sample)")
    what.add_argument("--image", type=Path, help="the edited or generated image")
    what.add_argument("--source", type=Path, help="the source image of an edit")
    what.add_argument("--instruction", help="the edit instruction")
    what.add_argument("--prompt", help="the generation prompt")
    batch = parser.add_argument_group("batch mode")
    batch.add_argument(
        "--input", type=Path, help="jsonl; each line has image, source (edits), instruction or prompt, optional id"
    )
    batch.add_argument("--output", type=Path, help="jsonl to write (one line per input line)")
    batch.add_argument("--resume", action="store_true", help="keep lines already in --output and score the rest")
    batch.add_argument("--chunk", type=int, default=64, help="lines judged per step (default 64)")
    how = parser.add_argument_group("critic and reward")
    add_critic_arguments(how)
    how.add_argument(
        "--dimensions", help="comma list; default execution,consistency for edits, instruction,quality for generations"
    )
    how.add_argument("--reward", help="registered reward name or class path; default cme (edit) / qma (gen); 'none'")
    return parser


def add_critic_arguments(group: Any, critic_default: str | None = "generative") -> None:
    """The flags that choose and configure a critic, shared by ``firm score``, ``firm bench`` and ``firm serve``.

    :func:`build_critic` passes each flag that was given to the critic, if the critic takes it.
    """
    default_note = f" ({critic_default})" if critic_default else " (generative when --model is given)"
    group.add_argument("--critic", default=critic_default, help=f"registered critic name or class path{default_note}")
    group.add_argument("--model", help="hub id or local Hugging Face folder (or the served model name)")
    group.add_argument("--base-url", dest="base_url", help="server URL, for --critic openai or remote")
    group.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    group.add_argument("--dtype", help="auto, float32, bfloat16, float16")
    group.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, help="token budget of every answer")
    group.add_argument("--max-pixels", dest="max_pixels", type=int, help="cap on image pixels seen by the critic")
    group.add_argument("--batch-size", dest="batch_size", type=int, help="requests per forward batch of the critic")
    group.add_argument(
        "--samples", type=int, help="answers sampled and averaged per verdict (avg@n); 1 (default) = greedy"
    )
    group.add_argument("--temperature", type=float, help="sampling temperature with --samples (default 1.0)")
    group.add_argument(
        "--template",
        dest="templates",
        action="append",
        default=[],
        metavar="DIM=NAME_OR_PATH",
        help="prompt template for a dimension, e.g. execution=./my_exec.txt (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    if args.input is not None:
        if args.image or args.source or args.instruction or args.prompt:
            raise UsageError("--input (batch mode) cannot be combined with --image/--source/--instruction/--prompt")
        if args.output is None:
            raise UsageError("--input needs --output, the jsonl to write")
        from firm.commands.score_batch import score_jsonl

        return score_jsonl(args)
    sample = parse_sample(vars(args), base=Path.cwd())
    reward = resolve_reward(args.reward, sample["task"], sample["dimensions"])  # checked before a model loads
    critic = build_critic(args)
    result = judge_samples(critic, [sample], [reward])[0]
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def parse_sample(raw: dict[str, Any], base: Path, default_dimensions: str | None = None) -> dict[str, Any]:
    """Validate one sample (from flags or a jsonl line) and load its images.

    Raises:
        UsageError: naming the missing file, unreadable image, unknown dimension or inconsistent fields.
    """
    from firm.critics.base import task_of

    instruction, prompt = raw.get("instruction"), raw.get("prompt")
    if raw.get("image") is None:
        raise UsageError("no image: give --image (or an 'image' field in each jsonl line)")
    if (instruction is None) == (prompt is None):
        raise UsageError("give exactly one of --instruction (an edit) or --prompt (a generation)")
    task = "edit" if instruction is not None else "gen"
    if task == "edit" and raw.get("source") is None:
        raise UsageError("an edit needs its source image: give --source")
    if task == "gen" and raw.get("source") is not None:
        raise UsageError("--source belongs to edits; a generation takes --prompt")
    dims_text = raw.get("dimensions") or default_dimensions
    if isinstance(dims_text, list):
        dims = [str(d) for d in dims_text]
    else:
        dims = dims_text.split(",") if dims_text else list(EDIT_DIMENSIONS if task == "edit" else GEN_DIMENSIONS)
    dims = [d.strip() for d in dims if d.strip()]
    for dim in dims:
        try:
            dim_task = task_of(dim)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if dim_task != task:
            raise UsageError(
                f"dimension {dim!r} judges {'edits' if dim_task == 'edit' else 'generations'}, "
                f"but this sample is {'an edit' if task == 'edit' else 'a generation'}"
            )
    sample = {
        "task": task,
        "text": instruction if task == "edit" else prompt,
        "dimensions": dims,
        "image_path": str(raw["image"]),
        "image": load_image(base / Path(raw["image"])),
        "source": None,
    }
    if task == "edit":
        sample["source_path"] = str(raw["source"])
        sample["source"] = load_image(base / Path(raw["source"]))
    return sample


def load_image(path: Path) -> Any:
    """Open an image as RGB.

    Raises:
        UsageError: when the file is missing or is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UsageError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"cannot read image {path}: {exc}") from exc


def build_critic(args: argparse.Namespace) -> Any:
    """Instantiate the chosen critic with the flags it accepts.

    Raises:
        UsageError: for an unknown critic, or a flag the chosen critic does not take.
    """
    from firm import plugins

    try:
        cls = plugins.resolve_class("firm.critics", args.critic)
    except (plugins.PluginError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    given = {flag: getattr(args, flag) for flag in CRITIC_FLAGS if getattr(args, flag, None) not in (None, [])}
    if "templates" in given:
        given["templates"] = _parse_templates(given["templates"])
    accepted = inspect.signature(cls).parameters
    if "max_new_tokens" in given and "max_new_tokens_per_dimension" in accepted:
        given["max_new_tokens_per_dimension"] = {}  # --max-new-tokens is the budget of every dimension
    refused = sorted(flag for flag in given if flag not in accepted)
    if refused:
        names = ", ".join("--" + flag.replace("_", "-") for flag in refused)
        raise UsageError(f"critic {args.critic!r} does not take {names}")
    missing = [
        name
        for name, param in accepted.items()
        if param.default is inspect.Parameter.empty
        and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
        and name not in given
    ]
    if missing:
        raise UsageError(f"critic {args.critic!r} needs " + ", ".join("--" + m.replace("_", "-") for m in missing))
    try:
        return cls(**given)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load critic {args.critic!r}: {exc}") from exc


def _parse_templates(items: Sequence[str]) -> dict[str, str]:
    templates = {}
    for item in items:
        dim, sep, value = item.partition("=")
        if not sep or not value:
            raise UsageError(f"--template takes DIM=NAME_OR_PATH, got {item!r}")
        templates[dim.strip()] = value.strip()
    return templates


def resolve_reward(name: str | None, task: str, dimensions: Sequence[str]) -> tuple[str, Any] | None:
    """(name, strategy) of the reward to report; None for ``--reward none`` or a default whose dimensions are unscored.

    Raises:
        UsageError: for an unknown reward, or an explicitly chosen reward whose dimensions are not scored.
    """
    from firm import plugins

    if name == "none":
        return None
    chosen = name or DEFAULT_REWARD[task]
    try:
        strategy = plugins.resolve_class("firm.rewards", chosen)()
    except (plugins.PluginError, ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    missing = [d for d in strategy.dimensions if d not in dimensions]
    if missing and name is not None:
        raise UsageError(f"reward {chosen!r} needs dimensions {', '.join(missing)}; add them to --dimensions")
    return None if missing else (chosen, strategy)


def judge_samples(
    critic: Any, samples: Sequence[dict[str, Any]], rewards: Sequence[tuple[str, Any] | None]
) -> list[dict[str, Any]]:
    """Judge every sample on its dimensions in one critic call and compute the reward per sample.

    Args:
        critic: the critic.
        samples: parsed samples (see :func:`parse_sample`).
        rewards: per sample, (name, strategy) or None.
    """
    from firm.critics.base import JudgeRequest
    from firm.rewards import RewardInput

    requests, owners = [], []
    for i, sample in enumerate(samples):
        for dim in sample["dimensions"]:
            requests.append(JudgeRequest(dim, sample["text"], sample["image"], sample["source"]))
            owners.append((i, dim))
    verdicts = critic.judge(requests)
    per_sample: list[dict[str, Any]] = [{} for _ in samples]
    for (i, dim), verdict in zip(owners, verdicts, strict=True):
        per_sample[i][dim] = verdict
    results = []
    for sample, sample_verdicts, chosen in zip(samples, per_sample, rewards, strict=True):
        result: dict[str, Any] = {"task": sample["task"], "text": sample["text"], "image": sample["image_path"]}
        if sample["source"] is not None:
            result["source"] = sample["source_path"]
        result["verdicts"] = {dim: v.to_dict() for dim, v in sample_verdicts.items()}
        if chosen is not None:
            name, strategy = chosen
            by_dim = {d: [sample_verdicts[d]] for d in strategy.dimensions}
            out = strategy(RewardInput.from_verdicts(by_dim, critic.score_range))
            total = float(out.total[0])
            result["reward"] = {
                "name": name,
                "total": None if math.isnan(total) else total,
                "valid": bool(out.valid[0]),
                "components": {k: _finite_or_none(float(v[0])) for k, v in out.components.items()},
            }
        results.append(result)
    return results


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value
