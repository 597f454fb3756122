"""Test helpers for critic SFT: small critic-sample shards, written with the schema's own ``to_wds``.

Scores follow the colour of the edited image (red 1 ... blue 5 for execution), so a critic can learn them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import webdataset as wds
from PIL import Image

from firm.critics.answer import format_answer
from firm.data.schema import CriticSample, to_wds

REPO = Path(__file__).resolve().parents[1]

COLOURS = [(220, 40, 40), (230, 150, 30), (200, 200, 40), (40, 180, 60), (40, 80, 220)]
WORDS = ["red", "orange", "yellow", "green", "blue"]


def critic_sample(index: int, dimension: str = "execution", size: int = 32) -> CriticSample:
    """A small, valid critic sample whose score is ``index % 5 + 1``."""
    score = index % 5 + 1
    image = Image.new("RGB", (size, size), COLOURS[score - 1])
    edit = dimension in ("execution", "consistency")
    source = Image.new("RGB", (size, size), (128, 128, 128)) if edit else None
    text = f"paint the square {WORDS[index % 5]}" if edit else f"a {WORDS[index % 5]} square"
    if dimension == "instruction":
        answer = format_answer(dimension, score, f"the square is {WORDS[score - 1]}", analysis=["colour checked"])
    else:
        answer = format_answer(dimension, score, f"the square is {WORDS[score - 1]}")
    return CriticSample(
        key=f"s{index:05d}",
        task="edit" if edit else "gen",
        dimension=dimension,
        text=text,
        image=image,
        source=source,
        score=score,
        answer=answer,
        provenance={"test": index},
    )


def write_shard(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write raw WebDataset records (``__key__`` plus members) to one tar shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for record in records:
            sink.write(dict(record))
    return path


def write_shards(
    folder: Path, samples: Sequence[CriticSample], per_shard: int, prefix: str = "train"
) -> tuple[str, list[Path]]:
    """Write ``samples`` into shards of ``per_shard`` samples; returns the brace pattern and the shard paths."""
    paths = []
    for start in range(0, len(samples), per_shard):
        index = len(paths)
        chunk = samples[start : start + per_shard]
        paths.append(write_shard(folder / f"{prefix}-{index:03d}.tar", [to_wds(s) for s in chunk]))
    pattern = str(folder / f"{prefix}-{{000..{len(paths) - 1:03d}}}.tar")
    return pattern, paths


#: Short prompt templates (the debug recipe's): fewer tokens keep CPU tests fast.
SHORT_TEMPLATES = {
    "execution": str(REPO / "recipes" / "debug" / "templates" / "execution.txt"),
    "consistency": str(REPO / "recipes" / "debug" / "templates" / "consistency.txt"),
}


#: Variables through which a launcher tells a process its place in a distributed run.
DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE")


def deepspeed_env() -> dict[str, str]:
    """Environment for processes that start DeepSpeed: its compiled ops cached in the repo's venv (as in make)."""
    import os

    # Rank variables left by an in-process distributed run would make Lightning think it was launched as one rank.
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".venv" / "torch_extensions"))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


class DumpLogits(pl.Callback):
    """At the end of fit, every rank runs the trained model on the first validation batch (ZeRO-3 needs all ranks in
    a forward pass) and rank 0 saves the logits: the outputs of the model before any conversion.

    Training subprocesses load it by class path (``critic_sft_support.DumpLogits``) with tests/ on PYTHONPATH.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batch = next(iter(trainer.datamodule.val_dataloader()))  # type: ignore[attr-defined]
        model: Any = pl_module.model
        model.eval()
        with torch.no_grad():
            logits = model(**batch["inputs"]).logits
        if trainer.is_global_zero:
            torch.save({"inputs": batch["inputs"], "logits": logits, "step": trainer.global_step}, self.path)


def run_firm_export(checkpoint: Path, out: Path) -> int:
    """``firm export CHECKPOINT OUT`` through the command module (as the ``firm`` entry point runs it)."""
    import argparse

    from firm.commands import export

    parser = argparse.ArgumentParser(prog="firm")
    export.add_parser(parser.add_subparsers(dest="command"))
    return export.run(parser.parse_args(["export", str(checkpoint), str(out)]))


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run the tiny critic on one intra-op thread (restored afterwards): on two shared cores, several threads per
    process contend with dataloader workers and other processes and make these tests many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
