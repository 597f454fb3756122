"""``firm fit|validate|test|predict``: Lightning's CLI over any firm task and datamodule, configured by a recipe.

Recipes are LightningCLI YAML files (see ``recipes/``) that name the task and datamodule by ``class_path``::

    firm fit -c recipes/debug/critic_sft_tiny.yaml
    firm fit -c recipes/critic/qwen3vl-8b_edit_sft.yaml --trainer.num_nodes 4
    firm fit -c recipes/debug/critic_sft_tiny.yaml --ckpt_path last     # continue the last checkpoint

``python -m firm.fit fit -c ...`` does the same (Lightning re-launches this command for each extra local device).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from jsonargparse import set_parsing_settings
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

__all__ = ["FirmCLI", "main"]


class FirmCLI(LightningCLI):
    """LightningCLI for firm: any LightningModule / LightningDataModule by class path, configs saved beside the logs.

    Args:
        args: the command line without the program name (``["fit", "-c", "recipe.yaml"]``); ``sys.argv[1:]`` when
            None.
        run: run the subcommand (False only parses and instantiates, for tests of recipes).
        **kwargs: other LightningCLI arguments.
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        # Settings dataclasses document each field with a docstring under it; show those in --help.
        set_parsing_settings(docstring_parse_attribute_docstrings=True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"prog": "firm"} if run else {"prog": "firm", "exit_on_error": False})
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=list(args) if args is not None else None,
            run=run,
            auto_configure_optimizers=False,
            **kwargs,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``firm fit|validate|test|predict`` with ``argv`` (default ``sys.argv[1:]``); the exit code."""
    try:
        FirmCLI(args=argv)
    except SystemExit as exc:  # argparse exits on --help and on bad arguments; report its code
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
