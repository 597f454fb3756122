"""Critic SFT data: prompts identical to inference, answer-only labels, splitting, exact resume, bad samples."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from firm.critics.transformers import GenerativeJudge
from firm.data.critic_sft import (
    BadSampleError,
    CriticBatchCollator,
    CriticSFTDataModule,
    CriticSFTDataset,
    SFTEncoder,
)
from firm.data.schema import to_wds
from firm.data.sft import IGNORE_INDEX, SampleTooLongError, build_sft_example, chat_prompt, collate_sft, request_of
from firm.data.stream import ShardStream, count_samples, expand_shards
from firm.prompts import default_template
from firm.testing import build_tiny_critic, critic_sample, write_shard, write_shards

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def critic() -> tuple[object, object]:
    return build_tiny_critic("qwen3_vl")


@pytest.fixture(scope="module")
def processor(critic: tuple[object, object]) -> object:
    return critic[1]


@pytest.fixture
def shards(tmp_path: Path) -> tuple[str, list[Path]]:
    """24 samples in 3 shards of 8, all three edit and gen dimensions but quality."""
    samples = [critic_sample(i, ("execution", "consistency", "instruction")[i % 3]) for i in range(24)]
    return write_shards(tmp_path, samples, per_shard=8)


def _data(pattern: str, processor: object, **kwargs: object) -> CriticSFTDataModule:
    settings: dict[str, object] = {"batch_size": 2, "num_workers": 0, "shuffle_buffer": 4}
    settings.update(kwargs)
    data = CriticSFTDataModule(train=pattern, val=pattern, **settings)  # type: ignore[arg-type]
    data.use_processor(processor)  # type: ignore[arg-type]
    return data


# -- prompts and labels ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dimension", ["execution", "instruction"])
def test_prompt_is_the_inference_judges_prompt(critic: tuple[object, object], dimension: str) -> None:
    model, processor = critic
    sample = critic_sample(3, dimension)
    judge = GenerativeJudge.from_model(model, processor)  # type: ignore[arg-type]
    assert chat_prompt(processor, request_of(sample), default_template(dimension)) == judge.chat_text(
        request_of(sample)
    )


def test_labels_fall_on_the_answer_and_end_of_turn_only(processor: object) -> None:
    sample = critic_sample(2, "execution")
    example = build_sft_example(processor, sample, default_template("execution"))  # type: ignore[arg-type]
    tokenizer = processor.tokenizer  # type: ignore[attr-defined]
    labelled = example["labels"][example["labels"] != IGNORE_INDEX].tolist()
    assert tokenizer.decode(labelled) == sample.answer + "<|im_end|>"
    # The labelled tokens are the tail of the input, and nothing before them carries a label.
    assert example["input_ids"][-len(labelled) :].tolist() == labelled
    assert (example["labels"][: -len(labelled)] == IGNORE_INDEX).all()
    prompt_ids = processor(  # type: ignore[operator]
        text=[chat_prompt(processor, request_of(sample), default_template("execution"))],  # type: ignore[arg-type]
        images=[request_of(sample).images],
        return_tensors="pt",
    )["input_ids"][0]
    assert example["input_ids"][: len(prompt_ids)].tolist() == prompt_ids.tolist()
    assert example["attention_mask"].all()
    assert (example["mm_token_type_ids"][-len(labelled) :] == 0).all()
    assert example["image_grid_thw"].shape == (2, 3)  # source and edited image


def test_too_long_sample_raises_naming_its_key(processor: object) -> None:
    sample = critic_sample(1, "execution")
    with pytest.raises(SampleTooLongError, match="s00001.*more than max_length=50") as err:
        build_sft_example(processor, sample, default_template("execution"), max_length=50)  # type: ignore[arg-type]
    assert err.value.kind == "too_long"


def test_collate_right_pads_tokens_and_concatenates_images() -> None:
    a = {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([-100, 6, 7]), "pixel_values": torch.ones(2, 3)}
    b = {"input_ids": torch.tensor([8]), "labels": torch.tensor([8]), "pixel_values": torch.zeros(1, 3)}
    a["attention_mask"] = torch.ones(3, dtype=torch.long)
    b["attention_mask"] = torch.ones(1, dtype=torch.long)
    batch = collate_sft([a, b], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["pixel_values"].shape == (3, 3)


def test_padded_batch_loss_equals_the_mean_over_answer_tokens(critic: tuple[object, object]) -> None:
    model, processor = critic
    encoder = SFTEncoder(processor)  # type: ignore[arg-type]
    examples = [encoder(critic_sample(i, "execution")) for i in (0, 1)]
    batch = collate_sft(examples, encoder.pad_token_id)
    with torch.no_grad():
        joint = model(**batch).loss  # type: ignore[operator]
        per = [model(**collate_sft([e], encoder.pad_token_id)).loss for e in examples]  # type: ignore[operator]
    counts = [int((e["labels"] != IGNORE_INDEX).sum()) for e in examples]
    expected = sum(loss * n for loss, n in zip(per, counts, strict=True)) / sum(counts)
    torch.testing.assert_close(joint, expected, rtol=1e-4, atol=1e-4)


# -- shards, splitting and epochs -------------------------------------------------------------------------------------


def test_count_and_patterns(shards: tuple[str, list[Path]]) -> None:
    pattern, paths = shards
    assert expand_shards(pattern) == [str(p) for p in paths]
    assert count_samples(expand_shards(pattern)) == 24
    with pytest.raises(ValueError, match="num_train_samples"):
        count_samples([f"pipe:cat {paths[0]}"])


def _rank_keys(pattern: str, processor: object, world: int, workers: int, split: str, batches: int) -> list[list[str]]:
    """The keys each rank reads in one epoch, through real DataLoader workers."""
    shards = tuple(expand_shards(pattern))
    encoder = SFTEncoder(processor)  # type: ignore[arg-type]
    out = []
    for rank in range(world):
        stream = ShardStream(shards, world * max(workers, 1), split, seed=1, shuffle=True, shuffle_buffer=4)  # type: ignore[arg-type]
        dataset = CriticSFTDataset(stream, encoder, rank=rank, workers=workers, batches=batches, batch_size=2)
        loader = DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=CriticBatchCollator(0))
        out.append([key for batch in loader for key in batch["keys"]])
    return out


@pytest.mark.parametrize(("world", "workers", "split"), [(2, 2, "sample"), (3, 1, "shard"), (1, 2, "sample")])
def test_ranks_and_workers_read_disjoint_parts_covering_the_data(
    shards: tuple[str, list[Path]], processor: object, world: int, workers: int, split: str
) -> None:
    pattern, _ = shards
    batches = 24 // (world * 2)
    keys = _rank_keys(pattern, processor, world, workers, split, batches)
    assert [len(k) for k in keys] == [batches * 2] * world
    everything = [key for rank in keys for key in rank]
    assert len(set(everything)) == len(everything) == 24


def test_uneven_shards_still_give_every_rank_the_same_number_of_batches(tmp_path: Path, processor: object) -> None:
    samples = [critic_sample(i) for i in range(14)]
    write_shard(tmp_path / "a-000.tar", [to_wds(s) for s in samples[:10]])
    write_shard(tmp_path / "a-001.tar", [to_wds(s) for s in samples[10:]])
    keys = _rank_keys(str(tmp_path / "a-{000..001}.tar"), processor, 2, 1, "shard", batches=3)
    assert [len(k) for k in keys] == [6, 6]  # the rank with the 4-sample shard reads it twice


def test_training_order_is_seeded_and_changes_with_the_epoch(shards: tuple[str, list[Path]], processor: object) -> None:
    pattern, _ = shards
    data = _data(pattern, processor)

    def epoch_keys(epoch: int) -> list[str]:
        data._current_epoch = lambda: epoch  # type: ignore[method-assign]
        return [key for batch in data.train_dataloader() for key in batch["keys"]]

    assert epoch_keys(0) == epoch_keys(0)
    assert epoch_keys(0) != epoch_keys(1)
    assert sorted(epoch_keys(1)) == sorted(epoch_keys(0))


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_position_continues_with_the_batches_an_uninterrupted_run_sees(
    shards: tuple[str, list[Path]], processor: object, workers: int
) -> None:
    pattern, _ = shards
    first = _data(pattern, processor, num_workers=workers)
    full = []
    state = None
    for i, batch in enumerate(first.train_dataloader()):
        full.append(batch["keys"])
        first.record_batch(batch)
        if i == 4:
            state = first.state_dict()
    assert len(full) == 12 and state is not None
    resumed = _data(pattern, processor, num_workers=workers)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # checkpoints store plain data
    rest = [batch["keys"] for batch in resumed.train_dataloader()]
    assert rest == full[5:]


def test_restore_with_another_layout_runs_the_remaining_count(
    shards: tuple[str, list[Path]], processor: object
) -> None:
    pattern, _ = shards
    first = _data(pattern, processor, num_workers=0)
    loader = iter(first.train_dataloader())
    for _ in range(3):
        first.record_batch(next(loader))
    state = first.state_dict()
    resumed = _data(pattern, processor, num_workers=2)
    resumed.load_state_dict(state)
    assert len(list(resumed.train_dataloader())) == 12 - 3


def test_validation_sees_every_sample_once_and_flags_repeats(tmp_path: Path, processor: object) -> None:
    pattern, _ = write_shards(tmp_path, [critic_sample(i) for i in range(5)], per_shard=5)
    data = _data(pattern, processor, val_batch_size=4)
    batches = list(data.val_dataloader())
    assert len(batches) == 2
    real = [key for b in batches for key, r in zip(b["keys"], b["real"].tolist(), strict=True) if r]
    assert sorted(real) == [f"s{i:05d}" for i in range(5)]
    assert len(batches[0]["judge"]) == 4


def test_pipe_urls_stream_like_local_files(shards: tuple[str, list[Path]], processor: object) -> None:
    pattern, paths = shards
    piped = [f"pipe:cat {p}" for p in paths]
    local = _data(pattern, processor, shuffle_buffer=1)
    remote = _data(piped, processor, shuffle_buffer=1, num_train_samples=24)  # type: ignore[arg-type]
    keys = [[k for b in d.train_dataloader() for k in b["keys"]] for d in (local, remote)]
    assert keys[0] == keys[1]


def test_max_pixels_is_set_on_the_processor(shards: tuple[str, list[Path]]) -> None:
    _, processor = build_tiny_critic("qwen3_vl", max_pixels=64 * 64)
    data = _data(shards[0], processor, max_pixels=32 * 32, min_pixels=32 * 32)
    assert data.processor.image_processor.size["longest_edge"] == 32 * 32  # type: ignore[attr-defined]
    batch = next(iter(data.train_dataloader()))
    assert (batch["inputs"]["image_grid_thw"][:, 1:] == 2).all()  # 32 px / 16 px patches


# -- bad samples ------------------------------------------------------------------------------------------------------


def _bad_shard(tmp_path: Path) -> Path:
    """16 samples, three of them bad: a corrupt PNG, a missing json member, a score of 7."""
    records = [to_wds(critic_sample(i)) for i in range(16)]
    records[2]["out.png"] = b"\x89PNG\r\n\x1a\n" + b"garbage"
    del records[5]["json"]
    meta = json.loads(records[9]["json"])
    meta["score"] = 7
    records[9]["json"] = json.dumps(meta).encode()
    return write_shard(tmp_path / "bad-000.tar", records)


def test_bad_samples_are_skipped_and_counted(tmp_path: Path, processor: object) -> None:
    shard = _bad_shard(tmp_path)
    data = _data(str(shard), processor, num_train_samples=13, batch_size=13, shuffle_buffer=1)
    batches = list(data.train_dataloader())
    assert len(batches) == 1
    assert Counter(batches[0]["skipped"]) == Counter(corrupt_image=1, missing_member=1, bad_score=1)
    assert {"s00002", "s00005", "s00009"}.isdisjoint(batches[0]["keys"])


def test_strict_mode_fails_naming_shard_and_key(tmp_path: Path, processor: object) -> None:
    shard = _bad_shard(tmp_path)
    data = _data(str(shard), processor, strict=True, shuffle_buffer=1)
    with pytest.raises(BadSampleError, match=rf"shard {shard}: sample 's00002': member 'out.png'"):
        list(data.train_dataloader())


def test_encoded_images_round_trip_through_the_shards(shards: tuple[str, list[Path]], processor: object) -> None:
    # The shards hold PNGs that decode to the same pixels the samples were made with.
    data = _data(shards[0], processor, shuffle_buffer=1)
    request = next(iter(data.val_dataloader()))["judge"].requests[0]
    buf = io.BytesIO()
    request.image.save(buf, format="PNG")
    assert Image.open(buf).getpixel((0, 0)) == critic_sample(0).image.getpixel((0, 0))
