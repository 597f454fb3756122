"""RL fine-tuning of a flow policy with rewards from critics (or any image reward): DiffusionNFT or Flow-GRPO.

One training step of :class:`PolicyRLTask` reads as the method does:

1. **rollout**: ``group_size`` images for each prompt of the batch, sampled by the algorithm's adapter role;
2. **score**: the reward (a critic with a strategy, or an image reward) rewards every image; invalid rewards stay NaN;
3. **advantages**: rewards and prompt keys are gathered from every rank, groups (one per prompt) are standardised
   together, and each rank keeps its own samples' advantages; invalid and skipped samples get weight 0;
4. **loss**: the algorithm yields one loss per trained timestep of each micro-batch, each is backpropagated as it
   comes, then one clipped optimizer step (and, for NFT, the old adapter's EMA).

Logged every step: ``train/reward`` and each component, ``train/invalid_rate``, ``train/zero_spread_fraction``, the
algorithm's diagnostics (loss, KL, optimality or ratio and clip fraction), ``time/rollout``, ``time/score`` and
``time/train``. Every ``grid_every`` steps a PNG grid (a group per row, rewards under the images) is written to
``<log dir>/grids``, and each step's prompt keys and rewards are appended to ``<log dir>/rollouts/rank<r>.jsonl``;
each validation run samples the datamodule's evaluation prompts with a deterministic sampler
and fixed seeds, logs ``eval/reward`` and redraws ``<log dir>/reward_curve.png``.

Checkpoints hold the two adapters (``trained`` and ``old``), never the frozen base weights; with the optimizer, the
schedule and the datamodule's position they are all a resumed run needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor

from firm.algorithms import group_advantages
from firm.policies.base import Policy, Rollout, RolloutSettings, to_pil
from firm.rewards.critic_reward import RewardSample, ScoredBatch
from firm.tasks.policy_rl.algorithm import NFT, RLAlgorithm, TrainBatch
from firm.tasks.policy_rl.grids import reward_curve, reward_grid
from firm.tasks.policy_rl.settings import AdvantageSettings, EvalSettings
from firm.training.export import EXPORT_KEY, export_entry
from firm.training.lora import LoraSettings
from firm.training.optim import OptimizerSettings, adamw_with_schedule

__all__ = ["PolicyRLTask", "sample_seed"]

#: FIRM's RL optimizer: AdamW, lr 3e-4 (SD3.5), weight decay 1e-4, no warmup.
RL_OPTIMIZER = OptimizerSettings(lr=3e-4, weight_decay=1e-4, warmup_ratio=0.0)


def sample_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (base seed, step, rank, sample...), the same in every process and run."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _key_id(key: str) -> int:
    return sample_seed("prompt", key)


class PolicyRLTask(pl.LightningModule):
    """RL of a flow policy (see the module docstring).

    Args:
        policy: the model family, e.g. ``SD3Generator`` (LoRA adapters are added here).
        reward: what rewards the images: ``FromCritic`` (a critic and a strategy, QMA for generations by default)
            or an image reward (``ColourFraction``, a plugin's class).
        algorithm: ``NFT`` (DiffusionNFT, FIRM's) or ``FlowGRPO``.
        rollout: resolution, steps, sampler and guidance of the training rollouts.
        group_size: images per prompt (FIRM: 12 in code, 16 in the paper).
        lora: adapter rank, alpha and targets; None for FIRM's (r 32, alpha 64, the family's attention projections).
        optimizer: AdamW and its schedule (FIRM: lr 3e-4, weight decay 1e-4).
        grad_clip: gradient norm clip (FIRM: 1.0); 0 turns it off.
        train_batch_size: samples per forward pass when training (memory); None trains on all of a step's samples
            at once. Gradients accumulate over micro-batches and timesteps into one optimizer step per RL step.
        rollout_batch_size: samples per forward pass when sampling (memory; with CFG each pass is twice this);
            None samples all of a step's images at once. Images do not depend on it.
        advantages: how rewards become advantages.
        evaluation: how the evaluation prompts are sampled.
        grid_every: write a training image grid every this many steps (0: never).
        seed: the seed of all sampling and training noise (per step, rank and sample, so a resumed run continues
            exactly).

    Raises:
        ValueError: for a group size below 2, a negative clip or a micro-batch below 1.
    """

    def __init__(
        self,
        policy: Policy,
        reward: Any,
        algorithm: RLAlgorithm = NFT(),  # noqa: B008 - a dataclass instance that is never mutated
        rollout: RolloutSettings = RolloutSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        group_size: int = 4,
        lora: LoraSettings | None = None,
        optimizer: OptimizerSettings = RL_OPTIMIZER,
        grad_clip: float = 1.0,
        train_batch_size: int | None = None,
        rollout_batch_size: int | None = None,
        advantages: AdvantageSettings = AdvantageSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        evaluation: EvalSettings = EvalSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        grid_every: int = 50,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if group_size < 2:
            raise ValueError(
                f"group_size must be at least 2 (advantages compare images of one prompt), got {group_size}"
            )
        if grad_clip < 0:
            raise ValueError(f"grad_clip must be 0 (off) or more, got {grad_clip}")
        for name, size in (("train_batch_size", train_batch_size), ("rollout_batch_size", rollout_batch_size)):
            if size is not None and size < 1:
                raise ValueError(f"{name} must be at least 1 when given, got {size}")
        if not callable(reward):
            raise ValueError(f"reward must be callable on reward samples (FromCritic, an ImageReward), got {reward!r}")
        # The models and the reward are objects (saved as weights, or not at all); the settings are the hparams.
        self.save_hyperparameters(ignore=["policy", "reward", "algorithm"])
        _plain_hparams(self)
        self.automatic_optimization = False
        # Checkpoints hold the adapters only; the frozen base weights come from the policy's own source.
        self.strict_loading = False
        self.policy = policy
        self.reward = reward
        self.algorithm = algorithm
        self.rollout_settings = algorithm.rollout_settings(rollout)
        self.group_size = group_size
        self.optimizer_settings = optimizer
        self.grad_clip = grad_clip
        self.train_batch_size = train_batch_size
        self.rollout_batch_size = rollout_batch_size
        self.advantage_settings = advantages
        self.evaluation = evaluation
        self.grid_every = grid_every
        self.seed = seed
        policy.add_adapters(lora)
        self.history: dict[str, list[tuple[int, float]]] = {"train": [], "eval": []}
        self._eval_rewards: list[Tensor] = []
        self._folder: Path | None = None

    # -- one RL step --------------------------------------------------------------------------------------------

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        step = self.global_step
        rank = self.global_rank
        prompts, sources = _texts_and_sources(batch)
        seeds = [sample_seed(self.seed, "rollout", step, rank, i) for i in range(len(batch) * self.group_size)]

        started = time.perf_counter()
        self.policy.eval()
        rollout = self.policy.sample(
            prompts, self.rollout_settings, group_size=self.group_size, seeds=seeds, sources=sources,
            role=self.algorithm.rollout_role, batch_size=self.rollout_batch_size,
        )  # fmt: skip
        rolled = time.perf_counter()
        scored = self._score(rollout, batch, sources)
        score_done = time.perf_counter()

        keys = torch.tensor([_key_id(p.key) for p in batch], dtype=torch.long)[rollout.group_index]
        advantages, weights, stats = self._advantages(scored.output.total, keys)
        metrics = self._train(rollout, advantages.to(self.device), weights.to(self.device), step)
        trained = time.perf_counter()

        size = len(rollout)
        self._log_rewards("train", scored, size)
        self.log_dict({f"train/{k}": v for k, v in {**stats, **metrics}.items()}, batch_size=size, prog_bar=False)
        self.log("time/rollout", rolled - started, batch_size=size)
        self.log("time/score", score_done - rolled, batch_size=size)
        self.log("time/train", trained - score_done, batch_size=size)
        mean = _nanmean(scored.output.total)
        self.log("train/reward", mean, batch_size=size, prog_bar=True)
        self.history["train"].append((step, float(mean)))
        self._record(step, batch, scored, advantages, weights)
        if self.grid_every and step % self.grid_every == 0 and self.global_rank == 0:
            self._write_grid(f"train_step{step:06d}", rollout, scored, prompts)
        return torch.tensor(metrics.get("loss", 0.0))

    def _record(
        self, step: int, batch: Sequence[Any], scored: ScoredBatch, advantages: Tensor, weights: Tensor
    ) -> None:
        """Append this rank's step to ``<log dir>/rollouts/rank<r>.jsonl``: the prompt keys, each image's reward
        (null when invalid), advantage and training weight: an audit trail of what the policy was trained on."""
        folder = self._log_dir()
        if folder is None:
            return
        path = folder / "rollouts" / f"rank{self.global_rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        rewards = [None if math.isnan(r) else r for r in scored.output.total.tolist()]
        line = {
            "step": step,
            "keys": [p.key for p in batch],
            "group_size": self.group_size,
            "rewards": rewards,
            "advantages": advantages.tolist(),
            "weights": weights.tolist(),
        }
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    def _score(self, rollout: Rollout, batch: Sequence[Any], sources: Sequence[Any] | None) -> ScoredBatch:
        images = rollout.pil()
        samples = [
            RewardSample(
                batch[g].prompt,
                images[i],
                None if sources is None else sources[g],
                getattr(batch[g], "requirement", "") or "",
            )
            for i, g in enumerate(rollout.group_index.tolist())
        ]
        scored: ScoredBatch = self.reward(samples)
        if len(scored.output.total) != len(samples):
            raise RuntimeError(f"the reward returned {len(scored.output.total)} values for {len(samples)} images")
        return scored

    def _advantages(self, total: Tensor, keys: Tensor) -> tuple[Tensor, Tensor, dict[str, float]]:
        """Advantages of this rank's samples, from groups gathered over all ranks; and each sample's weight (1 for
        samples to learn from, 0 for invalid or skipped ones)."""
        rewards = total.float().to(self.device)
        keys = keys.to(self.device)
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            gathered: Any = self.all_gather(rewards), self.all_gather(keys)
            all_rewards, all_keys = gathered[0].reshape(-1), gathered[1].reshape(-1)
        else:
            all_rewards, all_keys = rewards, keys
        settings = self.advantage_settings
        result = group_advantages(
            all_rewards.cpu(), all_keys.cpu(), global_std=settings.global_std, clip=settings.clip, eps=settings.eps,
            skip_uninformative=settings.skip_uninformative, min_std=settings.min_std, max_mean=settings.max_mean,
        )  # fmt: skip
        mine = slice(self.global_rank * len(rewards), (self.global_rank + 1) * len(rewards))
        keep = result.valid & ~(result.uninformative & settings.skip_uninformative)
        stats = {
            "invalid_rate": result.num_invalid / max(len(all_rewards), 1),
            "zero_spread_fraction": result.zero_spread_fraction,
            "uninformative_groups": float(result.num_uninformative_groups),
            "advantage_abs": float(result.advantages.abs().mean()),
        }
        return result.advantages[mine], keep[mine].float(), stats

    def _train(self, rollout: Rollout, advantages: Tensor, weights: Tensor, step: int) -> dict[str, float]:
        self.policy.train()
        optimizer: Any = self.optimizers()
        scheduler: Any = self.lr_schedulers()
        count = len(rollout)
        size = self.train_batch_size or count
        steps = self.algorithm.timesteps(
            len(rollout.sigmas) - 1, torch.Generator().manual_seed(sample_seed(self.seed, "t", step))
        )
        totals: dict[str, float] = {}
        calls, objective = 0, 0.0
        # Each loss is a weighted sum over its micro-batch (weight 0 drops invalid samples); scaled so, the sum over
        # micro-batches and timesteps is the mean over all kept samples and trained timesteps.
        scale = 1.0 / (float(weights.sum().clamp(min=1.0)) * len(steps))
        for start in range(0, count, size):
            index = torch.arange(start, min(start + size, count))
            batch = self._train_batch(rollout, index, advantages, weights, step)
            for item in self.algorithm.losses(self.policy, batch, steps, scale):
                self.manual_backward(item.loss)
                calls += 1
                objective += float(item.loss.detach())
                for name, value in item.metrics.items():
                    totals[name] = totals.get(name, 0.0) + float(value)
        if self.grad_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        self.policy.eval()
        metrics = {name: value / max(calls, 1) for name, value in totals.items()}
        # The objective optimised this step: the mean over kept samples and trained timesteps (0 when none kept).
        metrics["loss"] = objective
        metrics.update(self.algorithm.after_update(self.policy, step + 1))
        return metrics

    def _train_batch(
        self, rollout: Rollout, index: Tensor, advantages: Tensor, weights: Tensor, step: int
    ) -> TrainBatch:
        rank = self.global_rank
        generators = [torch.Generator().manual_seed(sample_seed(self.seed, "train", step, rank, int(i))) for i in index]

        def rows(tensor: Tensor) -> Tensor:
            return tensor[index.to(tensor.device)]

        return TrainBatch(
            latents=rows(rollout.latents),
            condition=rollout.condition.select(index),
            advantages=rows(advantages),
            sigmas=rollout.sigmas,
            generators=generators,
            weights=rows(weights),
            trajectory=None if rollout.trajectory is None else rows(rollout.trajectory),
            log_probs=None if rollout.log_probs is None else rows(rollout.log_probs),
            guidance_scale=self.rollout_settings.guidance_scale,
        )

    # -- evaluation ---------------------------------------------------------------------------------------------

    def validation_step(self, batch: Sequence[Any], batch_idx: int) -> None:
        scored = self._evaluate(batch, write_grid=batch_idx == 0)
        self._eval_rewards.append(scored.output.total.float())
        self._log_rewards("eval", scored, len(scored))

    def _evaluate(self, batch: Sequence[Any], write_grid: bool) -> ScoredBatch:
        settings = dataclasses.replace(self.rollout_settings, sampler=self.evaluation.sampler)
        prompts, sources = _texts_and_sources(batch)
        per_prompt = self.evaluation.images_per_prompt
        seeds = [sample_seed(self.evaluation.seed, "eval", p.key, k) for p in batch for k in range(per_prompt)]
        rollout = self.policy.sample(
            prompts, settings, group_size=per_prompt, seeds=seeds, sources=sources, batch_size=self.rollout_batch_size
        )
        scored = self._score(rollout, batch, sources)
        if write_grid and self.global_rank == 0:
            self._write_grid(f"eval_step{self.global_step:06d}", rollout, scored, prompts)
        return scored

    def on_train_start(self) -> None:
        """The step-0 evaluation of a fresh run (``evaluation.at_start``): logged as ``eval/reward`` at step 0 and
        the first point of the reward curve."""
        if not self.evaluation.at_start or self.global_step > 0 or self.history["eval"]:
            return
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        loader = datamodule.val_dataloader() if datamodule is not None else []
        rewards = [self._evaluate(batch, write_grid=i == 0).output.total.float() for i, batch in enumerate(loader)]
        if not rewards:
            return
        mean = torch.tensor(_nanmean(torch.cat(rewards)), device=self.device)
        if self.trainer.world_size > 1:
            mean = self.trainer.strategy.reduce(mean, reduce_op="mean")
        self.history["eval"].append((0, float(mean)))
        for logger in self.loggers:
            logger.log_metrics({"eval/reward": float(mean)}, step=0)

    def on_validation_epoch_start(self) -> None:
        self._eval_rewards = []

    def on_validation_epoch_end(self) -> None:
        if not self._eval_rewards:
            return
        rewards = torch.cat(self._eval_rewards)
        mean = _nanmean(rewards)
        self.log("eval/reward", mean, sync_dist=True)
        self.log("eval/invalid_rate", float(rewards.isnan().float().mean()), sync_dist=True)
        if self.global_rank == 0 and not self.trainer.sanity_checking:
            self.history["eval"].append((self.global_step, float(mean)))
            folder = self._log_dir()
            if folder is not None:
                reward_curve(self.history, folder / "reward_curve.png")

    def _log_rewards(self, stage: str, scored: ScoredBatch, size: int) -> None:
        for name, values in scored.output.components.items():
            self.log(f"{stage}/reward_{name}", _nanmean(values), batch_size=size, sync_dist=stage == "eval")

    # -- images -------------------------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        # Trainer.log_dir is a collective under DDP (rank 0 broadcasts it): read it here, where every rank is.
        self._folder = self._find_log_dir()

    def _find_log_dir(self) -> Path | None:
        if self._trainer is None:
            return None
        folder = self.trainer.log_dir or self.trainer.default_root_dir
        return Path(folder) if folder else None

    def _log_dir(self) -> Path | None:
        """The run's log folder (grids, rollouts, reward curve), found once at the start of fit."""
        if self._folder is None:
            self._folder = self._find_log_dir()
        return self._folder

    def _write_grid(self, name: str, rollout: Rollout, scored: ScoredBatch, prompts: Sequence[str]) -> None:
        folder = self._log_dir()
        if folder is None:
            return
        per_row = len(rollout) // max(len(prompts), 1)
        grid = reward_grid(to_pil(rollout.images), scored.output.total.tolist(), prompts, per_row)
        path = folder / "grids" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        experiment = getattr(self.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_image"):
            import numpy as np

            experiment.add_image(name.split("_step")[0], np.asarray(grid), self.global_step, dataformats="HWC")

    # -- optimisation and checkpoints ---------------------------------------------------------------------------

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        total = self.trainer.max_steps
        if total is None or total < 1:
            raise ValueError("RL runs are measured in steps: set trainer.max_steps (the prompt stream has no end)")
        return adamw_with_schedule(self.policy.adapter_parameters(), self.optimizer_settings, total)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the adapters' weights (the base model is frozen and comes from its source), and what ``firm
        export`` needs to write the LoRA for diffusers."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if "lora_" in k}
        checkpoint[EXPORT_KEY] = export_entry(self)
        checkpoint["firm_rl_history"] = {k: [list(p) for p in v] for k, v in self.history.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check the checkpoint holds every adapter weight this policy has (a different rank or target list would
        otherwise be ignored silently)."""
        expected = {k for k in self.state_dict() if "lora_" in k}
        found = set(checkpoint["state_dict"])
        if expected != found:
            missing, extra = sorted(expected - found), sorted(found - expected)
            raise ValueError(
                "the checkpoint's adapters do not match this policy's (was it trained with another LoRA rank or "
                f"target list?): missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}"
            )
        history = checkpoint.get("firm_rl_history", {})
        self.history = {k: [(int(s), float(r)) for s, r in history.get(k, [])] for k in ("train", "eval")}

    def export_meta(self) -> dict[str, Any]:
        """The policy's family and LoRA settings: enough to write the adapter in diffusers' format."""
        return self.policy.export_meta()

    @classmethod
    def export_model(
        cls,
        state: Mapping[str, Tensor],
        meta: Mapping[str, Any],
        out: Path,
        *,
        adapter: bool = False,
        dtype: str | None = None,
    ) -> Path:
        """Write the trained adapter from a checkpoint's weights and metadata: with ``adapter``, the LoRA alone in
        diffusers' ``load_lora_weights`` format (the base model is not loaded); otherwise the base pipeline with the
        LoRA fused in, as a diffusers folder (the base model is loaded from where the run took it). A classmethod:
        ``firm export`` calls it without rebuilding the task and its models."""
        from firm.policies.export import write_lora, write_merged

        if adapter:
            return write_lora(state, meta, out, dtype=dtype)
        return write_merged(state, meta, out, dtype=dtype)


def _texts_and_sources(batch: Sequence[Any]) -> tuple[list[str], list[Any] | None]:
    """The prompts of a batch of RL prompts, and their source images (editors) or None when none has one."""
    sources = [getattr(p, "source", None) for p in batch]
    return [p.prompt for p in batch], sources if any(s is not None for s in sources) else None


def _plain_hparams(module: pl.LightningModule) -> None:
    """Settings objects in the hyperparameters as plain dicts (loggers write them as YAML; checkpoints stay
    loadable with ``weights_only=True``). Tasks built from a recipe already have plain values."""
    stores: tuple[Any, ...] = (module._hparams, module._hparams_initial)
    for store in stores:
        for name, value in list(store.items()):
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                store[name] = dataclasses.asdict(value)


def _nanmean(values: Tensor) -> float:
    finite = values[~values.isnan()]
    return float(finite.mean()) if len(finite) else math.nan
