"""Load a Hugging Face vision-language model and its processor from a hub id or a local folder.

transformers' Qwen-VL processors insist on a video processor, and every video processor needs torchvision. firm
judges images only, so where torchvision cannot be imported the processor is rebuilt without one (same tokenizer,
image processor and chat template): a CPU box with no working torchvision can still load a real critic folder.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText, PreTrainedModel, ProcessorMixin
from transformers.image_utils import SizeDict

#: model_type -> processor class name, for the families firm knows how to run without torchvision.
PROCESSOR_CLASSES = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
    "qwen3_vl_moe": "Qwen3VLProcessor",
}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on CUDA and fp32 elsewhere; otherwise the named dtype."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def resolve_device(device: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU.

    Raises:
        ValueError: for a device string torch does not know, or a CUDA device this machine or torch build lacks.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N ({exc})") from None
    if resolved.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(
                f"--device {device}: this torch ({torch.__version__}) is a CPU build without CUDA; install a CUDA "
                "build of torch, or use --device cpu"
            )
        count = torch.cuda.device_count()
        if count == 0 or (resolved.index is not None and resolved.index >= count):
            raise ValueError(f"--device {device}: this machine has {count} CUDA device(s); use --device cpu or auto")
    return resolved


def torchvision_available() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # a CUDA torchvision beside a CPU torch fails at import with various errors
        return False
    return True


def image_only_processor_class(name: str) -> type[ProcessorMixin]:
    """A subclass of transformers' processor ``name`` whose constructor takes no video processor.

    transformers derives a processor's parts from its ``__init__`` signature, so dropping the argument is enough
    for ``from_pretrained`` to skip loading (and importing) a video processor.
    """
    base = getattr(transformers, name)

    def __init__(
        self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kw: Any
    ) -> None:
        base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kw)

    return type(name, (base,), {"__init__": __init__, "__module__": __name__})


def load_processor(model: str | Path, model_type: str, **kwargs: Any) -> ProcessorMixin:
    """The model's processor; image-only where torchvision is missing. ``kwargs`` go to ``from_pretrained``."""
    if torchvision_available():
        processor: ProcessorMixin = transformers.AutoProcessor.from_pretrained(model, **kwargs)
        return processor
    if model_type not in PROCESSOR_CLASSES:
        raise ValueError(
            f"cannot load a processor for model type {model_type!r} without torchvision; firm knows "
            f"{', '.join(PROCESSOR_CLASSES)}. Install a torchvision that matches your torch to load others."
        )
    cls = image_only_processor_class(PROCESSOR_CLASSES[model_type])
    loaded: ProcessorMixin = cls.from_pretrained(model, **kwargs)
    return loaded


def load_vlm(
    model: str | Path,
    *,
    device: str = "auto",
    dtype: str = "auto",
    max_pixels: int | None = None,
    min_pixels: int | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a vision-language model for inference, in eval mode, and its processor.

    Args:
        model: a hub id (``Qwen/Qwen3-VL-8B-Instruct``) or a local Hugging Face folder.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16`` or ``float16``.
        max_pixels: cap on an image's pixel count after the processor's resize (fewer visual tokens).
        min_pixels: floor on an image's pixel count.
        trust_remote_code: run code shipped with the model; off unless you trust its source.
        attn_implementation: ``sdpa``, ``flash_attention_2``, ``eager``; transformers' default when None.

    Raises:
        FileNotFoundError: for a local-looking path that does not exist.
    """
    if isinstance(model, Path) or str(model).startswith((".", "/", "~")):
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no Hugging Face model folder at {path} (config.json missing)")
        model = path
    torch_device = resolve_device(device)
    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    processor = load_processor(model, config.model_type, trust_remote_code=trust_remote_code)
    if max_pixels is not None or min_pixels is not None:
        limit_pixels(processor, max_pixels=max_pixels, min_pixels=min_pixels)
    model_kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, torch_device), "trust_remote_code": trust_remote_code}
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    vlm = AutoModelForImageTextToText.from_pretrained(model, **model_kwargs)
    vlm.to(torch_device).eval()
    return vlm, processor


def limit_pixels(processor: ProcessorMixin, *, max_pixels: int | None = None, min_pixels: int | None = None) -> None:
    """Bound the pixel count the processor resizes images to, in place (Qwen-VL style image processors).

    The limits go into the image processor's ``size`` (``longest_edge``/``shortest_edge`` count pixels there), so
    they hold for every call and are saved with the processor. Passing ``max_pixels`` to ``from_pretrained`` instead
    leaks it into the tokenizer's init kwargs, from where transformers re-sends it to every call, deprecated.

    Raises:
        ValueError: for an image processor whose size is not a pixel budget, or limits below 1.
    """
    if (max_pixels is not None and max_pixels < 1) or (min_pixels is not None and min_pixels < 1):
        raise ValueError(f"pixel limits must be at least 1, got max_pixels={max_pixels} min_pixels={min_pixels}")
    image_processor = processor.image_processor
    size = dict(image_processor.size)
    if "longest_edge" not in size or "shortest_edge" not in size:
        raise ValueError(
            f"{type(image_processor).__name__} does not size images by pixel count (size={size}); "
            "max_pixels and min_pixels apply to Qwen-VL style processors only"
        )
    if max_pixels is not None:
        size["longest_edge"] = max_pixels
        # A floor above the new cap would make every resize fail.
        size["shortest_edge"] = min(size["shortest_edge"], max_pixels)
    if min_pixels is not None:
        size["shortest_edge"] = min_pixels
    if size["shortest_edge"] > size["longest_edge"]:
        raise ValueError(f"min_pixels={size['shortest_edge']} is above max_pixels={size['longest_edge']}")
    image_processor.size = SizeDict(**size)


def model_type_of(path: str | Path, trust_remote_code: bool = False) -> str:
    """The ``model_type`` of a hub id or a local folder (``qwen3_vl``, ``qwen2_5_vl``...)."""
    return str(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).model_type)


def read_model_type(folder: str | Path) -> str:
    """The ``model_type`` in a local folder's config.json."""
    return str(json.loads((Path(folder) / "config.json").read_text())["model_type"])
