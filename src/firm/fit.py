"""``firm fit|validate|test|predict``: Lightning's CLI over any firm task and datamodule, configured by a recipe.

Recipes are LightningCLI YAML files (see ``recipes/``) that name the task and datamodule by ``class_path``::

    firm fit -c recipes/debug/critic_sft_tiny.yaml
    firm fit -c recipes/critic/qwen3vl-8b_edit_sft.yaml --trainer.num_nodes 4
    firm fit -c recipes/debug/critic_sft_tiny.yaml --ckpt_path last     # continue the last checkpoint

``python -m firm.fit fit -c ...`` does the same (Lightning re-launches this command for each extra local device).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

from jsonargparse import set_parsing_settings
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from firm.errors import InputError

__all__ = ["FirmCLI", "main"]

#: What a recipe's top-level sections instantiate, by the base class jsonargparse names in its errors.
_SECTIONS = {"LightningModule": "model", "LightningDataModule": "data", "Trainer": "trainer"}


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

    def instantiate_classes(self) -> None:
        """Instantiate the recipe's classes; a value that a class refuses (``lr: -1``) becomes one line naming the
        section and the class's own message, instead of jsonargparse's nested union errors."""
        try:
            super().instantiate_classes()
        except (TypeError, ValueError) as exc:
            raise InputError(config_error(exc)) from exc


def config_error(exc: BaseException) -> str:
    """The gist of a recipe instantiation error: ``section (class path): the class's message``.

    jsonargparse reports a refused value as a union mismatch that lists, per candidate type, what went wrong; the
    candidates other than the class itself (``Expected a <class 'NoneType'>``) are noise.
    """
    text = str(exc)
    errors = [
        line.strip()[2:].strip()
        for line in text.splitlines()
        if line.strip().startswith("- ") and "Expected a <class 'NoneType'>" not in line
    ]
    section = next((name for base, name in _SECTIONS.items() if f".{base}'>" in text), None)
    class_path = re.search(r"class_path='([^']+)'", text)
    where = section or "recipe"
    if class_path is not None:
        where += f" ({class_path.group(1)})"
    message = "; ".join(errors) if errors else (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"{where}: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``firm fit|validate|test|predict`` with ``argv`` (default ``sys.argv[1:]``); the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    command = words[0] if words else "fit"
    try:
        FirmCLI(args=argv)
    except SystemExit as exc:  # argparse exits on --help and on bad arguments; report its code
        return exc.code if isinstance(exc.code, int) else 1
    except InputError as exc:  # a refused recipe value, missing test data: one line, as every firm command
        print(f"firm {command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
