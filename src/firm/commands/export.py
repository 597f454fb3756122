"""``firm export``: turn a critic training checkpoint into a Hugging Face folder.

The folder loads with ``firm score --model``, ``transformers`` (``AutoModelForImageTextToText.from_pretrained``) and
vLLM (``vllm serve``). Lightning checkpoint files and DeepSpeed ZeRO-2/3 checkpoint folders are both accepted.

Examples::

    firm export runs/critic_sft_tiny/checkpoints/last.ckpt runs/critic_sft_tiny/hf
    firm export runs/edit-8b/checkpoints/last.ckpt/ exports/firm-edit-8b --dtype bfloat16     # a ZeRO folder
    firm export runs/edit-lora/checkpoints/last.ckpt exports/edit-adapter --adapter            # keep the LoRA

Checkpoints hold pickled training state: export only checkpoints you trust.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from firm.commands import UsageError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="write a trained critic checkpoint as a Hugging Face folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="Lightning checkpoint file or DeepSpeed checkpoint folder")
    parser.add_argument("output", type=Path, help="the Hugging Face folder to write")
    parser.add_argument(
        "--adapter",
        action="store_true",
        help="with LoRA: write the peft adapter instead of merging it (default: merge)",
    )
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), help="dtype of the written weights (default: as trained)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from firm.training.export import export_checkpoint

    if not args.checkpoint.exists():
        raise UsageError(f"checkpoint not found: {args.checkpoint}")
    try:
        out = export_checkpoint(args.checkpoint, args.output, adapter=args.adapter, dtype=args.dtype)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"wrote {out}")
    return 0
