"""``firm score``: judge one edit, one generation, or a jsonl of them, and print verdicts and the reward as JSON.

Examples::

    firm score --model VisionXLab/FIRM-Edit-8B --source in.png --image out.png --instruction "Add a hat"
    firm score --model ./my-critic --image gen.png --prompt "two red cubes" --dimensions instruction,quality
    firm score --critic openai --base-url http://127.0.0.1:8000/v1 --model firm-edit ...
    firm score --model ./my-critic --input batch.jsonl --output scored.jsonl

In batch mode every input line gets one output line (with ``line`` and ``id``); a line whose images cannot be read
gets an ``error`` and is counted. ``--resume`` keeps what an interrupted run wrote and scores the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from firm.commands import UsageError
from firm.commands.critic_flags import add_critic_arguments, build, critic_spec


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


def run(args: argparse.Namespace) -> int:
    from firm.data.samples import parse_sample
    from firm.rewards.critic_reward import CriticReward
    from firm.rewards.scoring import choose_reward, counts_line, judge_samples, score_jsonl

    if args.input is not None:
        if args.image or args.source or args.instruction or args.prompt:
            raise UsageError("--input (batch mode) cannot be combined with --image/--source/--instruction/--prompt")
        if args.output is None:
            raise UsageError("--input needs --output, the jsonl to write")
        spec = critic_spec(args)
        counts = score_jsonl(
            lambda: build(spec),
            args.input,
            args.output,
            resume=args.resume,
            chunk=args.chunk,
            dimensions=args.dimensions,
            reward=args.reward,
        )
        print(counts_line(args.output, counts), file=sys.stderr)
        return 1 if counts.errors else 0
    sample = parse_sample(vars(args), base=Path.cwd())
    chosen = choose_reward(args.reward, sample.task, sample.dimensions)  # checked before a model loads
    critic = build(critic_spec(args))
    try:
        reward = None if chosen is None else CriticReward(critic, chosen[1], chosen[0])
        result = judge_samples(critic, [sample], [reward])[0]
    finally:
        critic.close()
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
