"""RL prompt sets: jsonl and shards read alike, bad lines, the rank-split stream, exact resume, the eval set."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from PIL import Image

from firm.data import RLPrompt, RLPromptDataModule, encode_png, read_rl_prompts
from firm.data.rl_prompts import epoch_order, rank_batches
from firm.errors import InputError
from firm.testing import write_shard

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(index: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (index * 20 % 256, 0, 255 - index))


def _records(count: int) -> list[dict[str, Any]]:
    """Edit prompts with a requirement, metadata and a source image (``images/<i>.png``) for every third."""
    records: list[dict[str, Any]] = []
    for i in range(count):
        record: dict[str, Any] = {"prompt": f"make shape {i} red", "metadata": {"index": i, "shapes": ["cube"]}}
        if i % 2:
            record["requirement"] = f"exactly {i} cubes"
        if i % 3 == 0:
            record["source"] = f"images/{i}.png"
        records.append(record)
    return records


def _write_jsonl(folder: Path, records: list[dict[str, Any]], name: str = "prompts.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        if "source" in record:
            (folder / record["source"]).parent.mkdir(exist_ok=True)
            _image(record["metadata"]["index"]).save(folder / record["source"])
    path = folder / name
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def _write_tar(path: Path, records: list[dict[str, Any]], start: int = 0) -> Path:
    samples = []
    for offset, record in enumerate(records):
        fields = {k: v for k, v in record.items() if k != "source"}
        sample: dict[str, Any] = {"__key__": f"{start + offset + 1:06d}", "json": json.dumps(fields).encode()}
        if "source" in record:
            sample["src.png"] = encode_png(_image(record["metadata"]["index"]))
        samples.append(sample)
    return write_shard(path, samples)


def _summary(prompts: list[RLPrompt]) -> list[tuple[Any, ...]]:
    return [
        (p.prompt, p.requirement, p.metadata, None if p.source is None else p.source.convert("RGB").tobytes())
        for p in prompts
    ]


class _Ranked(RLPromptDataModule):
    """The datamodule as rank ``rank`` of ``world`` sees it."""

    def __init__(self, *args: Any, rank: int = 0, world: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rank, self.world = rank, world

    def _rank_world(self) -> tuple[int, int]:
        return self.rank, self.world


def _take(data: RLPromptDataModule, count: int) -> list[list[str]]:
    batches = iter(data.train_dataloader())
    return [[p.key for p in next(batches)] for _ in range(count)]


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    return _write_jsonl(tmp_path / "set", [{"prompt": f"prompt {i}"} for i in range(10)])


# -- reading --------------------------------------------------------------------------------------------------------


def test_jsonl_and_shards_read_the_same_prompts(tmp_path: Path) -> None:
    records = _records(7)
    from_jsonl = read_rl_prompts(str(_write_jsonl(tmp_path / "jsonl", records)))
    _write_tar(tmp_path / "shards" / "edit-000.tar", records[:4])
    _write_tar(tmp_path / "shards" / "edit-001.tar", records[4:], start=4)
    from_shards = read_rl_prompts(str(tmp_path / "shards" / "edit-{000..001}.tar"))
    assert _summary(from_shards) == _summary(from_jsonl)
    assert [p.source is not None for p in from_jsonl] == [i % 3 == 0 for i in range(7)]
    assert from_jsonl[1].requirement == "exactly 1 cubes"
    assert from_jsonl[2].metadata == {"index": 2, "shapes": ["cube"]}
    # Keys: the file name and the line number, or the shard name and __key__.
    assert [p.key for p in from_jsonl[:2]] == ["prompts.jsonl:1", "prompts.jsonl:2"]
    assert [p.key for p in from_shards[3:5]] == ["edit-000.tar:000004", "edit-001.tar:000005"]
    # A folder reads its jsonl and tar files by name; a list reads in the order given.
    assert _summary(read_rl_prompts(str(tmp_path / "shards"))) == _summary(from_jsonl)
    both = read_rl_prompts([str(tmp_path / "shards" / "edit-001.tar"), str(tmp_path / "jsonl" / "prompts.jsonl")])
    assert _summary(both) == _summary(from_jsonl[4:] + from_jsonl)


def test_firm_editrl_layout_and_absolute_sources(tmp_path: Path) -> None:
    _image(1).save(tmp_path / "absolute.png")
    (tmp_path / "set" / "images").mkdir(parents=True)
    _image(2).save(tmp_path / "set" / "images" / "a.png")
    lines = [
        {"id": "edit-a", "instruction": "recolour the cube", "image": "images/a.png"},
        {"key": 7, "prompt": "add a ball", "source": str(tmp_path / "absolute.png")},
    ]
    path = tmp_path / "set" / "train_metadata.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")  # blank lines are not prompts
    a, b = read_rl_prompts(str(path))
    assert (a.key, a.prompt, b.key, b.prompt) == (
        "train_metadata.jsonl:edit-a",
        "recolour the cube",
        "train_metadata.jsonl:7",
        "add a ball",
    )
    assert a.source is not None and a.source.convert("RGB").tobytes() == _image(2).tobytes()
    assert b.source is not None and b.source.convert("RGB").tobytes() == _image(1).tobytes()


def test_bad_lines_are_skipped_counted_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    lines = [
        json.dumps({"prompt": "good one"}),
        "{not json",
        json.dumps({"requirement": "no prompt here"}),
        json.dumps({"prompt": "missing image", "source": "nowhere.png"}),
        json.dumps({"prompt": "corrupt image", "source": "broken.png"}),
        json.dumps({"prompt": "bad metadata", "metadata": [1, 2]}),
        json.dumps({"prompt": "both", "instruction": "names"}),
        json.dumps({"prompt": "good two", "key": "k"}),
        json.dumps({"prompt": "repeated key", "key": "k"}),
        json.dumps(["a", "list"]),
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    shard = _write_tar(tmp_path / "more.tar", [{"prompt": "shard good"}])
    write_shard(tmp_path / "more-bad.tar", [{"__key__": "x", "txt": b"no json"}, {"__key__": "y", "json": b"[1"}])
    with caplog.at_level(logging.WARNING, logger="firm.data.rl_prompts"):
        prompts = read_rl_prompts([str(path), str(shard), str(tmp_path / "more-bad.tar")])
    assert [p.prompt for p in prompts] == ["good one", "good two", "shard good"]
    for where in [*(f"{path}:{n}" for n in (2, 3, 4, 5, 6, 7, 9, 10)), f"{tmp_path / 'more-bad.tar'}:x"]:
        assert any(where + ":" in m or where + " " in m for m in caplog.messages), where
    assert "source image not found" in caplog.text and "not a decodable image" in caplog.text
    assert "repeats" in caplog.text and "skipped 10 of 13 prompts" in caplog.text

    data = RLPromptDataModule(train=[str(path), str(tmp_path / "more-bad.tar")])
    assert len(data.train_set) == 2
    assert data.skipped["train"] == {
        "bad_json": 3,
        "no_prompt": 1,
        "bad_source": 2,
        "bad_field": 2,
        "duplicate_key": 1,
        "missing_member": 1,
    }
    with pytest.raises(InputError, match=rf"{path}:2: not JSON"):
        read_rl_prompts(str(path), strict=True)


def test_nothing_usable_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text(json.dumps({"prompt": ""}) + "\n")
    with pytest.raises(InputError, match=r"no usable prompts .* read 1 file\(s\) .*'no_prompt': 1"):
        read_rl_prompts(str(tmp_path))
    with pytest.raises(InputError, match="prompt file not found"):
        read_rl_prompts(str(tmp_path / "missing.jsonl"))
    with pytest.raises(InputError, match="neither .jsonl nor .tar"):
        read_rl_prompts(str(_write_jsonl(tmp_path, [{"prompt": "p"}], name="prompts.json")))


# -- the training stream --------------------------------------------------------------------------------------------


def test_the_stream_is_deterministic_per_seed_and_runs_past_epochs(prompt_file: Path) -> None:
    first = _take(RLPromptDataModule(train=str(prompt_file), prompts_per_step=3, seed=5), 8)
    assert first == _take(RLPromptDataModule(train=str(prompt_file), prompts_per_step=3, seed=5), 8)
    assert first != _take(RLPromptDataModule(train=str(prompt_file), prompts_per_step=3, seed=6), 8)
    keys = [key for batch in first for key in batch]
    assert all(len(batch) == 3 for batch in first)
    # 24 prompts from 10: epochs 0 and 1 whole, each a different permutation of the set, then 4 of epoch 2.
    assert Counter(keys[:10]) == Counter(keys[10:20]) == Counter(f"prompts.jsonl:{i}" for i in range(1, 11))
    assert keys[:10] != keys[10:20]
    ordered = _take(RLPromptDataModule(train=str(prompt_file), prompts_per_step=4, shuffle=False), 3)
    assert [k.split(":")[1] for k in ordered[2]] == ["9", "10", "1", "2"]


def test_two_ranks_take_disjoint_parts_that_cover_each_epoch(prompt_file: Path) -> None:
    ranks = [_take(_Ranked(train=str(prompt_file), prompts_per_step=5, seed=1, rank=r, world=2), 4) for r in (0, 1)]
    for epoch in range(4):  # each rank owns 5 prompts of an epoch: one batch
        parts = [set(batches[epoch]) for batches in ranks]
        assert not parts[0] & parts[1]
        assert parts[0] | parts[1] == {f"prompts.jsonl:{i}" for i in range(1, 11)}
    # Index i of the epoch's order goes to rank i % 2.
    order = epoch_order(10, seed=1, epoch=0)
    assert ranks[0][0] == [f"prompts.jsonl:{i + 1}" for i in order[0::2]]
    assert ranks[1][0] == [f"prompts.jsonl:{i + 1}" for i in order[1::2]]


def test_rank_batches_with_uneven_shares() -> None:
    # 5 prompts over 2 ranks: rank 0 owns 3 per epoch, rank 1 owns 2; batches straddle epochs.
    stream = rank_batches(5, 1, 2, 3, seed=0, shuffle=False)
    assert [next(stream) for _ in range(3)] == [[1, 3, 1], [3, 1, 3], [1, 3, 1]]
    assert next(rank_batches(5, 0, 2, 2, seed=0, shuffle=False, start=1)) == [4, 0]
    with pytest.raises(ValueError, match="cannot give each of 4 ranks one"):
        next(rank_batches(3, 3, 4, 1, seed=0))


def test_resume_continues_with_the_next_batch(prompt_file: Path) -> None:
    uninterrupted = _take(RLPromptDataModule(train=str(prompt_file), prompts_per_step=3, seed=2), 12)
    first = RLPromptDataModule(train=str(prompt_file), prompts_per_step=3, seed=2)
    assert _take(first, 7) == uninterrupted[:7]
    assert first.batches_served == 7
    state = first.state_dict()
    assert state["position"] == 7 and state["epoch"] == 2 and state["seed"] == 2

    resumed = RLPromptDataModule(train=str(prompt_file), prompts_per_step=3, seed=2)
    batches = iter(resumed.train_dataloader())  # created before the state is loaded, as Lightning may do
    resumed.load_state_dict(state)
    assert resumed.batches_served == 7
    assert [[p.key for p in next(batches)] for _ in range(5)] == uninterrupted[7:12]
    assert resumed.batches_served == 12


def test_resume_under_changed_settings_warns(prompt_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = RLPromptDataModule(train=str(prompt_file), prompts_per_step=3, seed=2)
    _take(first, 2)
    resumed = RLPromptDataModule(train=str(prompt_file), prompts_per_step=3, seed=3)
    resumed.load_state_dict(first.state_dict())
    with caplog.at_level(logging.WARNING, logger="firm.data.rl_prompts"):
        _take(resumed, 1)
    assert "'seed': 2" in caplog.text and "'seed': 3" in caplog.text and "continuing at batch 2" in caplog.text


class _Recorder(pl.LightningModule):
    """Records the prompt keys of each training and validation step."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[str]] = []
        self.evaluated: list[list[str]] = []

    def training_step(self, batch: list[RLPrompt], batch_idx: int) -> torch.Tensor:
        self.seen.append([p.key for p in batch])
        return (self.weight - len(batch)).pow(2).sum()

    def validation_step(self, batch: list[RLPrompt], batch_idx: int) -> None:
        self.evaluated.append([p.key for p in batch])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(data: RLPromptDataModule, steps: int, root: Path, ckpt_path: Path | None = None) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps,
        val_check_interval=4,
        check_val_every_n_epoch=None,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(_Recorder(), datamodule=data, ckpt_path=ckpt_path)
    return trainer


def test_a_resumed_trainer_continues_with_the_next_batch(prompt_file: Path, tmp_path: Path) -> None:
    def data() -> RLPromptDataModule:
        return RLPromptDataModule(train=str(prompt_file), eval=str(prompt_file), eval_prompts=2, prompts_per_step=3)

    expected = _take(data(), 12)
    first = _fit(data(), 7, tmp_path)
    assert first.lightning_module.seen == expected[:7]
    # Sanity check and one validation, neither counted as training batches.
    assert first.lightning_module.evaluated == [["prompts.jsonl:1", "prompts.jsonl:2"]] * 2
    # Lightning fetched batch 8 ahead of time; it was not consumed, so the checkpoint does not count it.
    first.save_checkpoint(tmp_path / "step7.ckpt")
    resumed = _fit(data(), 12, tmp_path, ckpt_path=tmp_path / "step7.ckpt")
    assert resumed.lightning_module.seen == expected[7:12]


# -- the eval set ---------------------------------------------------------------------------------------------------


def test_eval_batches_are_fixed_split_and_padded(prompt_file: Path) -> None:
    def eval_keys(rank: int, world: int, **kwargs: Any) -> list[list[str]]:
        data = _Ranked(train=str(prompt_file), eval=str(prompt_file), rank=rank, world=world, **kwargs)
        return [[p.key.split(":")[1] for p in batch] for batch in data.val_dataloader()]

    assert eval_keys(0, 1, prompts_per_step=4) == [["1", "2", "3", "4"], ["5", "6", "7", "8"], ["9", "10"]]
    assert eval_keys(0, 1, prompts_per_step=4, seed=9) == eval_keys(0, 1, prompts_per_step=4)
    # 5 prompts over 2 ranks: both run 2 batches, rank 1's last one repeating the first prompt.
    assert eval_keys(0, 2, prompts_per_step=2, eval_prompts=5) == [["1", "3"], ["5"]]
    assert eval_keys(1, 2, prompts_per_step=2, eval_prompts=5) == [["2", "4"], ["1"]]
    assert RLPromptDataModule(train=str(prompt_file)).val_dataloader() == []
