"""Critic SFT performance and learning, each against a baseline. Three subcommands, each prints a Markdown table.

- ``data``: samples/s of :class:`~firm.data.critic_sft.CriticSFTDataModule` against plain WebDataset iteration
  (``wds.WebDataset(...).shuffle(...)``) doing the same decoding, prompt building and tokenization (target >= 0.8x).
- ``train``: SFT optimizer steps/s and peak memory of ``firm``'s Lightning task against a plain transformers
  ``Trainer`` on the same tiny critic, data and settings (target >= 1.0x). Each side runs in its own process so
  that peak memory (RSS on CPU, ``max_memory_allocated`` on CUDA) is its own.
- ``learning``: MAE against ShapesWorld ground truth on a held-out split for a trained export, the untrained critic
  (the recipe's starting weights) and constant-score baselines, with paired bootstrap intervals.

Usage (CPU, tiny critic, ShapesWorld shards written on first use)::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/critic_sft.py data --samples 1000 --workers 0 2
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/critic_sft.py train --steps 60
    HF_HUB_OFFLINE=1 python benchmarks/critic_sft.py learning --recipe recipes/debug/critic_sft_shapes_quality.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from firm.data.critic_sft import CriticSFTDataModule, SFTEncoder
from firm.data.schema import SampleError, from_wds
from firm.data.sft import collate_sft
from firm.prompts import load_template

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = {d: str(REPO / "recipes" / "debug" / "templates" / f"{d}.txt") for d in ("execution", "consistency")}


def shapes_shards(root: Path, dimension: str, n: int, split: str = "train") -> str:
    """A brace pattern over ShapesWorld shards of ``n`` samples (written once under ``root``)."""
    from firm.worlds.shapes.sft import ShapesWorldSFTDataModule

    data = ShapesWorldSFTDataModule(
        root=str(root),
        dimensions=[dimension],
        train_samples=n,
        val_samples=n if split == "val" else 0,
        shard_size=max(n // 4, 1),  # four shards: enough for whole-shard splitting over a few workers
    )
    data.prepare_data()
    return data._pattern(split, dimension, n)


# -- data throughput ------------------------------------------------------------------------------------------------


def _plain_loader(pattern: str, encoder: SFTEncoder, batch_size: int, workers: int, buffer: int) -> Any:
    import webdataset as wds

    def encode(raw: dict[str, Any]) -> dict[str, Any] | None:
        try:
            sample = from_wds(raw)
        except SampleError:
            return None
        return {"inputs": encoder(sample), "score": sample.score}

    def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {
            "inputs": collate_sft([i["inputs"] for i in items], encoder.pad_token_id),
            "scores": torch.tensor([i["score"] for i in items]),
        }

    dataset = (
        wds.WebDataset(
            pattern, shardshuffle=False, nodesplitter=wds.single_node_only, workersplitter=wds.split_by_worker
        )
        .shuffle(buffer, initial=buffer)
        .map(encode)
        .select(lambda x: x is not None)
    )
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)


def _rate(loader: Any, batch_size: int) -> float:
    start = time.perf_counter()
    count = sum(batch_size for _ in loader)
    return count / (time.perf_counter() - start)


def bench_data(args: argparse.Namespace) -> None:
    from firm.testing import build_tiny_critic

    pattern = shapes_shards(args.root, "execution", args.samples)
    _, processor = build_tiny_critic("qwen3_vl")
    templates = {d: load_template(p) for d, p in TEMPLATES.items()}
    rows = []
    for workers in args.workers:
        data = CriticSFTDataModule(
            train=pattern,
            batch_size=args.batch_size,
            num_workers=workers,
            shuffle_buffer=args.buffer,
            templates=TEMPLATES,
        )
        data.use_processor(processor)
        plain = _plain_loader(pattern, SFTEncoder(processor, templates), args.batch_size, workers, args.buffer)
        _rate(data.train_dataloader(), args.batch_size)  # warm caches (page cache, tokenizer) for both sides alike
        ours, base = _rate(data.train_dataloader(), args.batch_size), _rate(plain, args.batch_size)
        rows.append((workers, ours, base))
    print(f"\ncritic SFT data, {args.samples} ShapesWorld samples (64 px, edit pairs), batch {args.batch_size}\n")
    print("| workers | CriticSFTDataModule samples/s | plain WebDataset samples/s | ratio |")
    print("|---|---|---|---|")
    for workers, ours, base in rows:
        print(f"| {workers} | {ours:.1f} | {base:.1f} | {ours / base:.2f}x |")


# -- training throughput ----------------------------------------------------------------------------------------------


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _StepClock:
    """Times optimizer steps after ``skip`` warm-up steps."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.steps = 0
        self.start = 0.0
        self.end = 0.0

    def tick(self) -> None:
        self.steps += 1
        if self.steps == self.skip:
            self.start = time.perf_counter()
        self.end = time.perf_counter()

    def rate(self) -> float:
        return (self.steps - self.skip) / (self.end - self.start)


def _train_ours(args: argparse.Namespace, pattern: str) -> dict[str, float]:
    import lightning.pytorch as pl

    from firm.tasks import CriticSFTTask, EvalSettings, OptimizerSettings, TinyVLM

    clock = _StepClock(args.warmup)

    class Clock(pl.Callback):
        def on_train_batch_end(self, *_: Any) -> None:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            clock.tick()

    task = CriticSFTTask(TinyVLM(), optimizer=OptimizerSettings(lr=1e-3), evaluation=EvalSettings(generate=False))
    data = CriticSFTDataModule(
        train=pattern,
        batch_size=args.batch_size,
        num_workers=args.data_workers,
        shuffle_buffer=100,
        templates=TEMPLATES,
    )
    trainer = pl.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu",
        devices=1,
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Clock()],
    )
    trainer.fit(task, data)
    return {"steps_per_s": clock.rate(), "peak_mb": _peak_memory_mb(args.device)}


def _train_hf(args: argparse.Namespace, pattern: str) -> dict[str, float]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from firm.testing import build_tiny_critic

    model, processor = build_tiny_critic("qwen3_vl")
    model.train()
    templates = {d: load_template(p) for d, p in TEMPLATES.items()}
    encoder = SFTEncoder(processor, templates)
    loader = _plain_loader(pattern, encoder, 1, 0, 100)  # items are re-batched by the Trainer

    class Examples(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
            while True:  # the Trainer stops at max_steps
                for batch in loader.dataset:
                    yield batch["inputs"]

    clock = _StepClock(args.warmup)

    class Clock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            clock.tick()

    training = TrainingArguments(
        output_dir=str(args.root / "hf_trainer"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.steps // 10),
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=args.data_workers,
        use_cpu=not args.device.startswith("cuda"),
        disable_tqdm=True,
        # accelerate's batch dispatching slices every tensor by the batch size, pixel_values (patches) included.
        accelerator_config={"dispatch_batches": False},
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=Examples(),
        data_collator=lambda items: collate_sft(items, encoder.pad_token_id),
        callbacks=[Clock()],
    )
    trainer.train()
    return {"steps_per_s": clock.rate(), "peak_mb": _peak_memory_mb(args.device)}


def bench_train(args: argparse.Namespace) -> None:
    pattern = shapes_shards(args.root, "execution", args.batch_size * args.steps)
    results = {}
    for side in ("firm", "transformers"):
        command = [sys.executable, __file__, "--root", str(args.root), "_train_side", side, "--pattern", pattern]
        command += args.forward
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=dict(os.environ))
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    ours, base = results["firm"], results["transformers"]
    print(f"\ncritic SFT, tiny Qwen3-VL critic, batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up), ")
    print(f"device {args.device}, {args.data_workers} data workers\n")
    print("| trainer | steps/s | peak memory (MiB) |")
    print("|---|---|---|")
    print(f"| firm CriticSFTTask (Lightning) | {ours['steps_per_s']:.2f} | {ours['peak_mb']:.0f} |")
    print(f"| transformers Trainer | {base['steps_per_s']:.2f} | {base['peak_mb']:.0f} |")
    ratio = ours["steps_per_s"] / base["steps_per_s"]
    print(f"| ratio | {ratio:.2f}x | {ours['peak_mb'] / base['peak_mb']:.2f}x |")


def train_side(args: argparse.Namespace) -> None:
    run = _train_ours if args.side == "firm" else _train_hf
    print(json.dumps(run(args, args.pattern)))


# -- learning ---------------------------------------------------------------------------------------------------------


def _recipe_settings(path: Path) -> dict[str, Any]:
    """What the learning benchmark needs from a ShapesWorld critic recipe: the critic's source, dimension, world,
    templates, answer budget and where HFExport wrote the trained critic. Read with firm's own recipe parser, so that
    every setting the recipe leaves out has the class's default."""
    from firm.fit import FirmCLI

    class _Parse(FirmCLI):
        def instantiate_classes(self) -> None:
            return None

    config = _Parse(args=["--config", str(path)], run=False).config
    data, model = config["data"]["init_args"], config["model"]["init_args"]
    exports = [c.init_args.dirpath for c in config["trainer"]["callbacks"] or [] if c.class_path.endswith("HFExport")]
    return {
        "critic": model["critic"].as_dict(),
        "dimension": (data["dimensions"] or ["execution"])[0],
        "image_size": data["image_size"],
        "world_seed": data["world_seed"],
        "templates": {d: str(REPO / t) for d, t in (data["templates"] or {}).items()},
        "max_new_tokens": model["evaluation"].max_new_tokens,
        "export": exports[0] if exports else None,
    }


def bench_learning(args: argparse.Namespace) -> None:
    from jsonargparse import ArgumentParser

    from firm.critics.base import JudgeRequest
    from firm.critics.transformers import GenerativeJudge
    from firm.tasks.critic_sft import VLMSource
    from firm.worlds.shapes.world import ShapesWorld

    recipe = _recipe_settings(args.recipe)
    dimension = args.dimension or recipe["dimension"]
    export = args.export or Path(recipe["export"])
    world = ShapesWorld(size=recipe["image_size"], split=args.split, seed=recipe["world_seed"])
    samples = list(world.samples(dimension, args.n))
    labels = [s.score for s in samples]
    requests = [JudgeRequest(s.dimension, s.text, s.image, s.source) for s in samples]
    settings = {
        "templates": {dimension: recipe["templates"][dimension]} if dimension in recipe["templates"] else None,
        "max_new_tokens": recipe["max_new_tokens"],
        "batch_size": 25,
        "samples": args.samples,
    }
    trained = GenerativeJudge(str(export), device="cpu", **settings)
    # The untrained critic: the recipe's own critic source, i.e. the weights training started from.
    parser = ArgumentParser()
    parser.add_argument("--critic", type=VLMSource)
    source = parser.instantiate(parser.parse_object({"critic": recipe["critic"]})).critic
    untrained = GenerativeJudge.from_model(source.build_model().eval(), trained.processor, **settings)
    rows = []
    for name, judge in (("trained (export)", trained), ("untrained (the recipe's starting weights)", untrained)):
        started = time.perf_counter()
        rows.append((name, [v.score for v in judge.judge(requests)]))
        print(f"judged {len(requests)} samples with the {name} critic in {time.perf_counter() - started:.0f} s")
    train_world = ShapesWorld(size=recipe["image_size"], split="train", seed=recipe["world_seed"])
    train_labels = [s.score for s in train_world.samples(dimension, 500)]
    median = sorted(train_labels)[len(train_labels) // 2]
    rows.append((f"constant {median} (median of 500 train labels)", [median] * len(labels)))
    best = min(range(1, 6), key=lambda c: sum(abs(c - y) for y in labels))
    rows.append((f"constant {best} (best constant on these labels, in hindsight)", [best] * len(labels)))
    decoding = "greedy verdicts" if args.samples == 1 else f"each verdict the average of {args.samples} sampled answers"
    print(f"\n{dimension} on ShapesWorld split '{args.split}', {len(labels)} samples, {decoding}\n")
    print("| critic | MAE, valid verdicts | invalid rate | MAE, invalid = worst error | Pearson r (valid) |")
    print("|---|---|---|---|---|")
    errors: dict[str, list[float]] = {}
    for name, scores in rows:
        valid = [(s, y) for s, y in zip(scores, labels, strict=True) if s is not None]
        mae = sum(abs(s - y) for s, y in valid) / len(valid) if valid else float("nan")
        errors[name] = [
            float(abs(s - y) if s is not None else max(y - 1, 5 - y)) for s, y in zip(scores, labels, strict=True)
        ]
        r = _pearson([float(s) for s, _ in valid], [float(y) for _, y in valid])
        worst = sum(errors[name]) / len(labels)
        print(f"| {name} | {mae:.3f} | {1 - len(valid) / len(labels):.2f} | {worst:.3f} | {r:.2f} |")
    ours = errors[rows[0][0]]
    print("\nTrained critic's MAE (invalid = worst error) minus each baseline's, 95% paired bootstrap interval:")
    for name, _ in rows[1:]:
        low, high = _bootstrap_difference(ours, errors[name])
        difference = (sum(ours) - sum(errors[name])) / len(ours)
        print(f"- {name}: {difference:+.3f} ({low:+.3f} .. {high:+.3f})")


def _bootstrap_difference(a: Sequence[float], b: Sequence[float], resamples: int = 2000) -> tuple[float, float]:
    """95% percentile interval of mean(a - b) over paired resamples (seeded)."""
    diff = torch.tensor(a) - torch.tensor(b)
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(0, len(diff), (resamples, len(diff)), generator=generator)
    means = diff[index].mean(dim=1).sort().values
    return float(means[int(0.025 * resamples)]), float(means[int(0.975 * resamples) - 1])


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant or empty."""
    if len(a) < 2:
        return float("nan")
    ta, tb = torch.tensor(a), torch.tensor(b)
    if ta.std() == 0 or tb.std() == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([ta, tb]))[0, 1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/data/benchmarks"), help="where ShapesWorld shards go")
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data")
    data.add_argument("--samples", type=int, default=1000)
    data.add_argument("--batch-size", type=int, default=8)
    data.add_argument("--buffer", type=int, default=500)
    data.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    for name in ("train", "_train_side"):
        train = sub.add_parser(name)
        if name == "_train_side":
            train.add_argument("side", choices=("firm", "transformers"))
            train.add_argument("--pattern", required=True)
        train.add_argument("--steps", type=int, default=60)
        train.add_argument("--warmup", type=int, default=10)
        train.add_argument("--batch-size", type=int, default=8)
        train.add_argument("--data-workers", type=int, default=1)
        train.add_argument("--device", default="cpu")
    learning = sub.add_parser("learning")
    learning.add_argument("--recipe", type=Path, required=True, help="the ShapesWorld recipe that trained the critic")
    learning.add_argument("--export", type=Path, help="trained critic folder (default: the recipe's HFExport one)")
    learning.add_argument("--dimension", help="dimension to judge; the recipe's first if unset")
    learning.add_argument("--split", default="test")
    learning.add_argument("--n", type=int, default=200, help="held-out samples to judge")
    learning.add_argument(
        "--samples", type=int, default=1, help="answers per verdict: 1 = greedy; more = sampled and averaged (avg@n)"
    )
    args = parser.parse_args(argv)
    if args.command == "train":
        args.forward = [
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
            "--data-workers", str(args.data_workers), "--device", args.device,
        ]  # fmt: skip
    {"data": bench_data, "train": bench_train, "_train_side": train_side, "learning": bench_learning}[args.command](
        args
    )


if __name__ == "__main__":
    main()
