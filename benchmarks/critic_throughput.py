"""Throughput of the in-process critics: batched generation against single calls, score-token against generation.

Prints a Markdown table of samples/s on the same model and the same requests:

- ``generative, loop of 1``: the baseline, one ``generate`` call per sample (``GenerativeJudge`` with batch 1);
- ``generative, batch B``: ``GenerativeJudge`` with ``--batch-size`` (target: at least 3x the loop);
- ``score-token, batch B``: ``ScoreTokenJudge``, one forward pass per batch.

Every generated answer is exactly ``--max-new-tokens`` long (``min_new_tokens`` is set to the same value, which keeps
the end token from being chosen), so all generative rows do the same work whatever the random weights write.

Usage (CPU, tiny random critics from firm.testing, a few seconds):

    HF_HUB_OFFLINE=1 python benchmarks/critic_throughput.py --family qwen3_vl --threads 1

On a GPU, a real or random 8B critic:

    python benchmarks/critic_throughput.py --model Qwen/Qwen3-VL-8B-Instruct --device cuda --dtype bfloat16
    python benchmarks/critic_throughput.py --random-size 8b --device cuda --dtype bfloat16 \
        --image-size 512 --max-pixels 262144 --max-new-tokens 256

``--random-size 8b`` builds Qwen3-VL-8B-Instruct's architecture with random weights directly on the device (nothing
is downloaded) and pairs it with firm's tiny byte-level tokenizer; the numbers measure compute, not answers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin, Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from firm.critics.base import JudgeRequest
from firm.critics.hf import PROCESSOR_CLASSES, image_only_processor_class, load_vlm, resolve_device, resolve_dtype
from firm.critics.inprocess import InProcessCritic
from firm.critics.score_token import ScoreTokenJudge
from firm.critics.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS, tiny_tokenizer
from firm.critics.transformers import GenerativeJudge
from firm.testing import CRITIC_FAMILIES, build_tiny_critic

INSTRUCTIONS = (
    "add a red hat",
    "remove the blue square in the lower left corner",
    "make the background night time with a few stars and a thin crescent moon above the houses",
    "turn the circle green",
)


#: ``--prompt short``: one line instead of firm's full rubric, so that decoding, not a long prefill, dominates.
SHORT_TEMPLATE = "Rate from 1 to 5 how well the second image carries out the edit: {text}"


def qwen3_vl_8b_config(token_ids: dict[str, int]) -> Qwen3VLConfig:
    """Qwen3-VL-8B-Instruct's architecture (text 36 x 4096, vision 27 x 1152) with the given special token ids."""
    text = {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 262144,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
        "pad_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "bos_token_id": None,
    }
    vision = {
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_heads": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 4096,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [8, 16, 24],
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=False,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
    )


def random_qwen3_vl_8b(
    device: torch.device, dtype: torch.dtype, max_pixels: int
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Qwen3-VL-8B-sized random weights, initialised on ``device``, with the tiny byte tokenizer."""
    tokenizer = tiny_tokenizer()
    config = qwen3_vl_8b_config({tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS})
    torch.manual_seed(0)
    # Initialising on the device: 8.8B parameters take minutes to fill on a CPU and seconds on a GPU.
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype).eval()
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=max_pixels
    )
    processor_cls = image_only_processor_class(PROCESSOR_CLASSES["qwen3_vl"])
    return model, processor_cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def build(args: argparse.Namespace) -> tuple[PreTrainedModel, ProcessorMixin, str]:
    """The model and processor under test, and a one-line description of them."""
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.random_size == "8b":
        model, processor = random_qwen3_vl_8b(device, dtype, args.max_pixels)
        return model, processor, f"random Qwen3-VL-8B architecture, {dtype}, {device}"
    if args.model:
        model, processor = load_vlm(args.model, device=args.device, dtype=args.dtype, max_pixels=args.max_pixels)
        return model, processor, f"{args.model}, {dtype}, {device}"
    model, processor = build_tiny_critic(args.family, max_pixels=args.max_pixels, vocab=args.vocab)
    described = f"tiny {args.family} (firm.testing, {args.vocab} vocabulary), {dtype}, {device}"
    return model.to(device=device, dtype=dtype), processor, described


def requests(n: int, image_size: int) -> list[JudgeRequest]:
    """``n`` execution requests (two images each) with instructions of different lengths."""
    rng = np.random.default_rng(0)

    def image() -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8))

    return [JudgeRequest("execution", INSTRUCTIONS[i % len(INSTRUCTIONS)], image(), source=image()) for i in range(n)]


def samples_per_s(critic: InProcessCritic, batch: Sequence[JudgeRequest], repeats: int) -> float:
    """Best of ``repeats`` timed runs over ``batch``, after one warm-up batch."""
    critic.judge(batch[: critic.batch_size])
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        critic.judge(batch)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(batch) / best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=CRITIC_FAMILIES, default="qwen3_vl", help="tiny critic family (CPU)")
    parser.add_argument("--model", help="hub id or local folder of a real critic, instead of a tiny one")
    parser.add_argument("--random-size", choices=["8b"], help="random weights of Qwen3-VL-8B's size (GPU)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--samples", type=int, default=32, help="requests per timed run")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="every answer is exactly this long")
    parser.add_argument("--image-size", type=int, default=64, help="side of the square test images, in pixels")
    parser.add_argument("--max-pixels", type=int, default=64 * 64, help="the processor's cap on pixels per image")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row; the best counts")
    parser.add_argument(
        "--vocab",
        choices=["qwen", "bytes"],
        default="qwen",
        help="tiny critic's tokenizer: Qwen's real vocabulary (realistic prompt lengths) or one token per byte",
    )
    parser.add_argument(
        "--prompt",
        choices=["builtin", "short"],
        default="builtin",
        help="firm's execution template (about 235 Qwen tokens; 1.2K with --vocab bytes) or one line",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch (0: torch's default); 1 is steadiest on a busy box",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        templates = None
        if args.prompt == "short":
            path = f"{scratch}/short.txt"
            with open(path, "w", encoding="utf-8") as file:
                file.write(SHORT_TEMPLATE)
            templates = {"execution": path}
        run(args, templates)


def run(args: argparse.Namespace, templates: dict[str, str] | None) -> None:
    """Time the three critics and print the table."""
    model, processor, described = build(args)
    batch = requests(args.samples, args.image_size)
    tokens = args.max_new_tokens
    generation = {
        "templates": templates,
        "max_new_tokens": tokens,
        "max_new_tokens_per_dimension": {},
        "generation_kwargs": {"min_new_tokens": tokens},
    }
    rows = [
        ("generative, loop of 1", GenerativeJudge.from_model(model, processor, batch_size=1, **generation)),
        (
            f"generative, batch {args.batch_size}",
            GenerativeJudge.from_model(model, processor, batch_size=args.batch_size, **generation),
        ),
        (
            f"score-token, batch {args.batch_size}",
            ScoreTokenJudge.from_model(model, processor, batch_size=args.batch_size, templates=templates),
        ),
    ]
    rates = [samples_per_s(critic, batch, args.repeats) for _, critic in rows]
    prompt_tokens = rows[1][1].encode(batch[:1])["input_ids"].shape[1]

    print(
        f"Model: {described}; {args.samples} execution requests, two {args.image_size}px images each, "
        f"{args.prompt} prompt ({prompt_tokens} prompt tokens in the first request); "
        f"generation: exactly {tokens} new tokens; best of {args.repeats}.\n"
    )
    print("| critic | samples/s | vs generative loop of 1 | vs generative batched |")
    print("|---|---:|---:|---:|")
    for (name, _), rate in zip(rows, rates, strict=True):
        print(f"| {name} | {rate:.2f} | {rate / rates[0]:.1f}x | {rate / rates[1]:.1f}x |")


if __name__ == "__main__":
    main()
