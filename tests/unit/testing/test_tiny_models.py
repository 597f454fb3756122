"""firm.testing's tiny critics: built from configs, saved as Hugging Face folders, loaded back through load_vlm."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from firm.critics.hf import load_processor, load_vlm, read_model_type
from firm.testing import CRITIC_FAMILIES, TinySize, build_tiny_critic, save_tiny_critic, tiny_tokenizer


def noise(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def chat(processor: object, n_images: int, text: str) -> str:
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)  # type: ignore[attr-defined]


@pytest.mark.parametrize("family", CRITIC_FAMILIES)
def test_a_saved_critic_loads_back_and_answers_the_same(family: str, tmp_path: Path) -> None:
    built_model, built_processor = build_tiny_critic(family, seed=3)
    folder = save_tiny_critic(tmp_path / family, family, seed=3)
    assert read_model_type(folder) == family
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in folder.iterdir()
    }

    model, processor = load_vlm(folder, device="cpu", dtype="float32")
    assert type(model) is type(built_model) and not model.training
    texts = [chat(processor, 2, "add a hat"), chat(processor, 1, "a much longer prompt about a red circle")]
    images = [[noise(48, 40, 1), noise(48, 40, 2)], [noise(32, 64, 3)]]
    inputs = processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    built_inputs = built_processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    assert inputs.keys() == built_inputs.keys()
    assert all(torch.equal(inputs[k], built_inputs[k]) for k in inputs)

    with torch.inference_mode():
        assert torch.equal(model(**inputs).logits, built_model(**built_inputs).logits)
        loaded_ids = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        built_ids = built_model.generate(**built_inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(loaded_ids, built_ids)


def test_the_same_seed_gives_the_same_weights_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, _ = build_tiny_critic("qwen3_vl", seed=1)
    assert torch.equal(torch.rand(1), expected_next), "building a critic must not move the caller's random state"
    b, _ = build_tiny_critic("qwen3_vl", seed=1)
    c, _ = build_tiny_critic("qwen3_vl", seed=2)
    weights = [dict(m.named_parameters()) for m in (a, b, c)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_the_tokenizer_writes_each_digit_and_byte_as_one_token() -> None:
    tokenizer = tiny_tokenizer()
    for digit in "0123456789":
        assert len(tokenizer.encode(digit, add_special_tokens=False)) == 1
    text = 'Score: {"score": [4]} — ok'
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == len(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode("<|im_end|>", add_special_tokens=False) == [tokenizer.eos_token_id]


@pytest.mark.parametrize("family", CRITIC_FAMILIES)
def test_max_pixels_bounds_the_visual_tokens(family: str, tmp_path: Path) -> None:
    folder = save_tiny_critic(tmp_path / family, family, max_pixels=64 * 64)
    _, processor = load_vlm(folder, device="cpu")
    big = noise(256, 256, 1)
    patch = processor.image_processor.patch_size
    (grid,) = processor.image_processor(images=[big], return_tensors="pt")["image_grid_thw"].tolist()
    assert grid[1] * grid[2] * patch * patch <= 64 * 64

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the limit must not go through transformers' deprecated call kwargs
        _, smaller = load_vlm(folder, device="cpu", max_pixels=32 * 32 * 2)
        inputs = smaller(text=[chat(smaller, 1, "x")], images=[[big]], return_tensors="pt")
    (small_grid,) = inputs["image_grid_thw"].tolist()
    assert small_grid[1] * small_grid[2] * patch * patch <= 32 * 32 * 2 < grid[1] * grid[2] * patch * patch
    # The limit is part of the processor: saved with it, it holds after loading again.
    smaller.save_pretrained(tmp_path / "resaved")
    reloaded = load_processor(tmp_path / "resaved", family)
    assert reloaded.image_processor.size["longest_edge"] == 32 * 32 * 2


@pytest.mark.parametrize("family", CRITIC_FAMILIES)
def test_a_larger_tiny_critic_sees_more_visual_tokens_and_still_round_trips(family: str, tmp_path: Path) -> None:
    size = TinySize(hidden_size=96, layers=3, vision_hidden_size=48, vision_depth=1, patch_size=8)
    model, processor = build_tiny_critic(family, seed=1, size=size)
    assert model.config.text_config.hidden_size == 96
    assert model.config.text_config.num_hidden_layers == 3
    image = noise(64, 64, 2)
    tokens = processor(text=[chat(processor, 1, "x")], images=[[image]], return_tensors="pt")
    _, default_processor = build_tiny_critic(family, seed=1)
    default = default_processor(text=[chat(processor, 1, "x")], images=[[image]], return_tensors="pt")
    image_id = model.config.image_token_id
    # 8-pixel patches merged 2 x 2: (64 / 16)^2 = 16 visual tokens, four times the default 16-pixel patches' 4.
    assert int((tokens["input_ids"] == image_id).sum()) == 16
    assert int((default["input_ids"] == image_id).sum()) < 16
    model.save_pretrained(tmp_path / "hf")
    processor.save_pretrained(tmp_path / "hf")
    loaded, _ = load_vlm(tmp_path / "hf", device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**tokens).logits, model(**tokens).logits)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size": 48}, "hidden_size must be a positive multiple of 32"),
        ({"vision_hidden_size": 40}, "vision_hidden_size must be a positive multiple of 16"),
        ({"layers": 0}, "at least one layer"),
        ({"patch_size": 1}, "patch_size must be at least 2"),
    ],
)
def test_impossible_sizes_are_refused_with_the_rule(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TinySize(**kwargs)
