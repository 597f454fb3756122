"""``firm export``: turn a training checkpoint into a folder inference loads.

Critic checkpoints become a Hugging Face folder; RL checkpoints become the trained LoRA for diffusers'
``load_lora_weights`` (``--adapter``) or the base pipeline with it fused in (see docs/rl.md).

A critic folder loads with ``firm score --model``, ``transformers`` (``AutoModelForImageTextToText.from_pretrained``)
and vLLM (``vllm serve``). Lightning checkpoint files and DeepSpeed ZeRO-2/3 checkpoint folders are both accepted.

Examples::

    firm export runs/critic_sft_tiny/checkpoints/last.ckpt runs/critic_sft_tiny/hf
    firm export runs/edit-8b/checkpoints/last.ckpt/ exports/firm-edit-8b --dtype bfloat16     # a ZeRO folder
    firm export runs/edit-lora/checkpoints/last.ckpt exports/edit-adapter --adapter            # keep the LoRA
    firm export runs/rl_nft_tiny/checkpoints/last.ckpt runs/rl_nft_tiny/lora --adapter       # RL: diffusers LoRA

Nothing is unpickled by default: checkpoint files are read with ``torch.load(weights_only=True)``. A DeepSpeed
checkpoint folder can only be converted by unpickling its files (DeepSpeed's converter has no safe loader), which runs
any code they hold: pass ``--trust-checkpoint`` for folders you or your cluster wrote, never for downloaded ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from firm.commands import UsageError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="write a trained critic (Hugging Face folder) or RL policy (diffusers LoRA or fused pipeline) checkpoint",
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
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow unpickling, which DeepSpeed checkpoint folders need: it runs any code the files hold, so only "
        "for checkpoints you trust (default: refuse)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from firm.training.export import export_checkpoint

    if not args.checkpoint.exists():
        raise UsageError(f"checkpoint not found: {args.checkpoint}")
    try:
        out = export_checkpoint(
            args.checkpoint, args.output, adapter=args.adapter, dtype=args.dtype, trust=args.trust_checkpoint
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"wrote {out}")
    return 0
