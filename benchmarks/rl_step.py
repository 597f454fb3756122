"""The cost of one RL step of :class:`~firm.tasks.policy_rl.PolicyRLTask` against the model calls inside it.

Baseline: the time spent in the model calls themselves (text encoding, transformer forwards in rollouts and
training, VAE decoding, the reward, backward passes and the optimizer step), timed around each call in the same run.
The rest of the step's wall time is firm's overhead (the loop, advantages, logging, grids, rollouts log): the target
is at most 15% for NFT and for Flow-GRPO. Peak memory is printed beside it (``max_memory_allocated`` on CUDA, the
process's peak RSS on CPU).

Usage::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python benchmarks/rl_step.py                 # tiny SD3 on the CPU
    python benchmarks/rl_step.py --device cuda --size sd35m --resolution 512 --group 12 --dtype bfloat16 --steps 3

``--size sd35m`` builds SD3.5-Medium's transformer shape with random weights (24 blocks of 1536; the text encoders
and VAE stay tiny, their cost is outside the RL loop's control), LoRA r 32 on the attention projections.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from firm.policies import RolloutSettings, SD3Generator, TinySD3, build_tiny_sd3
from firm.rewards import MeanColour
from firm.tasks.policy_rl import NFT, FlowGRPO, PolicyRLTask

PROMPTS = ["a red circle", "two blue squares", "a green star on grey", "three small pink hexagons"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Timer:
    """Seconds spent in named calls (synchronised on CUDA), and the steps' wall time."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.spent: dict[str, float] = defaultdict(float)
        self.depth = 0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.depth:  # a call inside a timed call is already counted
                return fn(*args, **kwargs)
            self.depth += 1
            _sync(self.device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync(self.device)
                self.spent[name] += time.perf_counter() - start
                self.depth -= 1

        return timed


class StepClock(pl.Callback):
    """Wall time of each training step after ``warmup`` steps."""

    def __init__(self, timer: Timer, warmup: int) -> None:
        self.timer, self.warmup = timer, warmup
        self.walls: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, idx: int) -> None:
        if idx == self.warmup:
            self.timer.spent.clear()
        _sync(self.timer.device)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, out: Any, batch: Any, idx: int
    ) -> None:
        _sync(self.timer.device)
        if idx >= self.warmup:
            self.walls.append(time.perf_counter() - self._start)


def _policy(size: str, dtype: str) -> SD3Generator:
    if size == "tiny":
        return SD3Generator(tiny=TinySD3(width=64, heads=4, layers=4), dtype=dtype)
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    pipeline = build_tiny_sd3(TinySD3(latent_channels=16, colour_vae=False))
    # A VAE that downsamples by 8 like SD3.5's, so that the transformer sees SD3.5's token count (4096 at 512 px).
    pipeline.vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8), latent_channels=16, layers_per_block=1, norm_num_groups=4,
    )  # fmt: skip
    pipeline.vae_scale_factor = 8
    # SD3.5-Medium's MM-DiT: 24 blocks, 24 heads of 64, joint attention 4096, pooled 2048, 16 latent channels.
    pipeline.transformer = SD3Transformer2DModel(
        sample_size=64, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
        num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
        pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
    )  # fmt: skip
    policy = SD3Generator(pipeline=pipeline, dtype=dtype)
    policy.encode = _padded_encode(policy)  # type: ignore[method-assign]
    return policy


def _padded_encode(policy: SD3Generator) -> Callable[..., Any]:
    """The tiny text encoders' embeddings widened to SD3.5's 4096 / 2048 dims (the real encoders run once per prompt,
    outside the steps measured here)."""
    encode = policy.encode

    def widened(*args: Any, **kwargs: Any) -> Any:
        condition = encode(*args, **kwargs)
        embeds, pooled = condition.tensors["prompt_embeds"], condition.tensors["pooled_projections"]
        condition.tensors = {
            "prompt_embeds": torch.nn.functional.pad(embeds, (0, 4096 - embeds.shape[-1])),
            "pooled_projections": torch.nn.functional.pad(pooled, (0, 2048 - pooled.shape[-1])),
        }
        return condition

    return widened


def run(args: argparse.Namespace, algorithm_name: str) -> dict[str, Any]:
    device = args.device
    timer = Timer(device)
    policy = _policy(args.size, args.dtype)
    reward = MeanColour()
    algorithm = NFT() if algorithm_name == "nft" else FlowGRPO()
    rollout = RolloutSettings(height=args.resolution, width=args.resolution, num_steps=args.num_steps)
    task = PolicyRLTask(policy, reward, algorithm, rollout, group_size=args.group, grid_every=0)
    task.evaluation = type(task.evaluation)(at_start=False)
    policy.transformer_velocity = timer.wrap("transformer", policy.transformer_velocity)  # type: ignore[method-assign]
    policy.decode = timer.wrap("vae decode", policy.decode)  # type: ignore[method-assign]
    policy.encode = timer.wrap("text encode", policy.encode)  # type: ignore[method-assign]
    task.reward = timer.wrap("reward", reward)
    task.manual_backward = timer.wrap("backward", task.manual_backward)  # type: ignore[method-assign]

    with tempfile.TemporaryDirectory() as folder:
        prompts = Path(folder) / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
        from firm.data import RLPromptDataModule

        data = RLPromptDataModule(train=str(prompts), prompts_per_step=args.prompts)
        clock = StepClock(timer, args.warmup)
        trainer = pl.Trainer(
            accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, max_steps=args.warmup + args.steps,
            limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[clock], default_root_dir=folder,
            precision="bf16-mixed" if args.dtype == "bfloat16" else "32-true",
        )  # fmt: skip
        optimizer_step = torch.optim.AdamW.step
        torch.optim.AdamW.step = timer.wrap("optimizer", optimizer_step)  # type: ignore[method-assign]
        try:
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            trainer.fit(task, data)
        finally:
            torch.optim.AdamW.step = optimizer_step  # type: ignore[method-assign]
    wall = sum(clock.walls)
    models = sum(timer.spent.values())
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    images = args.prompts * args.group * len(clock.walls)
    return {
        "algorithm": algorithm_name,
        "step_s": wall / len(clock.walls),
        "model_s": models / len(clock.walls),
        "overhead": (wall - models) / wall,
        "images_per_s": images / wall,
        "peak_gib": peak,
        "calls": {k: v / len(clock.walls) for k, v in sorted(timer.spent.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=("tiny", "sd35m"), default="tiny")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--num-steps", type=int, default=10, help="sampler steps per rollout")
    parser.add_argument("--group", type=int, default=8, help="images per prompt")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--steps", type=int, default=5, help="measured RL steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--algorithms", nargs="+", default=["nft", "grpo"], choices=("nft", "grpo"))
    args = parser.parse_args()
    rows = [run(args, name) for name in args.algorithms]
    print(f"\n{args.size} SD3, {args.resolution} px, {args.num_steps} steps, {args.prompts} prompts x {args.group} "
          f"images, {args.dtype} on {args.device}; baseline: the model calls inside the same steps\n")  # fmt: skip
    print("| algorithm | step s | model calls s | overhead (target <= 15%) | images/s | peak GiB |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['algorithm']} | {row['step_s']:.3f} | {row['model_s']:.3f} | {100 * row['overhead']:.1f}% | "
            f"{row['images_per_s']:.1f} | {row['peak_gib']:.2f} |"
        )
    print("\nper step, by call (s): " + "; ".join(
        f"{r['algorithm']}: " + ", ".join(f"{k} {v:.3f}" for k, v in r["calls"].items()) for r in rows
    ))  # fmt: skip


if __name__ == "__main__":
    main()
