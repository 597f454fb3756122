"""Import paths that moved in the library-layer restructuring keep working for one release, with a warning; old
checkpoints that pickled settings under the old class names still load with ``weights_only=True``."""

from __future__ import annotations

import importlib
import io
import sys
import warnings

import pytest
import torch


def test_remote_critic_moved_to_critics_and_the_old_path_warns() -> None:
    from firm.critics.remote import RemoteCritic

    with pytest.warns(DeprecationWarning, match="firm.critics.remote.RemoteCritic"):
        from firm.serving import RemoteCritic as old
    assert old is RemoteCritic
    with pytest.warns(DeprecationWarning):
        from firm.serving.client import RemoteCritic as older
    assert older is RemoteCritic
    from firm import plugins

    assert plugins.load("firm.critics", "remote") is RemoteCritic


@pytest.mark.parametrize(
    ("old", "names", "new"),
    [
        ("firm.tasks.vlm", ("TinyVLM", "PretrainedVLM", "model_type_of"), "firm.tasks.critic_sft"),
        ("firm.tasks.settings", ("LoraSettings", "OptimizerSettings", "EvalSettings"), "firm.tasks.critic_sft"),
    ],
)
def test_moved_task_modules_still_import_with_a_warning(old: str, names: tuple[str, ...], new: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match="the old path goes in the next release"):
        module = importlib.import_module(old)
    current = importlib.import_module(new)
    for name in names:
        if hasattr(current, name):
            assert getattr(module, name) is getattr(current, name)


def test_checkpoints_naming_the_old_classes_load_with_weights_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from firm.tasks import LoraSettings, TinyVLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        importlib.import_module("firm.tasks.vlm")
        importlib.import_module("firm.tasks.settings")
    # Pickled while the classes lived in their old modules, as checkpoints written before the move name them.
    monkeypatch.setattr(TinyVLM, "__module__", "firm.tasks.vlm")
    monkeypatch.setattr(LoraSettings, "__module__", "firm.tasks.settings")
    buffer = io.BytesIO()
    torch.save({"lora": LoraSettings(r=4), "critic": TinyVLM(seed=3)}, buffer)
    assert b"firm.tasks.vlm" in buffer.getvalue() or b"firm.tasks.vlm" in _members(buffer)
    monkeypatch.undo()
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert loaded["lora"] == LoraSettings(r=4) and isinstance(loaded["critic"], TinyVLM)
    assert loaded["critic"].seed == 3


def _members(buffer: io.BytesIO) -> bytes:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        return b"".join(archive.read(name) for name in archive.namelist() if name.endswith("data.pkl"))
