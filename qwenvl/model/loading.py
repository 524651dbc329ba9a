"""Loading Qwen-VL models and processors, and counting visual tokens without decoding pixels.

The model class is chosen from ``config.model_type`` (never from the folder name, never with
``trust_remote_code``). Pixel budgets follow the processor's own ``smart_resize`` rule: an image is resized so
both sides are multiples of ``patch_size * merge_size`` (32 for Qwen3-VL) and its area lies within
``[min_pixels, max_pixels]``; each 32x32 block becomes one ``<|image_pad|>`` token in the LLM.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import transformers

from qwenvl.compat import image_pixel_limits, set_image_pixel_limits
from qwenvl.flare import pixels
from qwenvl.model.attention import select_attn_implementation

# model_type in config.json -> transformers class name.
MODEL_CLASSES: dict[str, str] = {
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
}
# from_pretrained keyword arguments that also matter for reading the config.
_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "subfolder")
_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
MAX_ASPECT_RATIO = pixels.MAX_ASPECT_RATIO  # smart_resize refuses images more elongated than this


class ModelNotFoundError(OSError):
    """A model name that is neither a local folder nor a hub id whose files are in the local cache."""


# ----------------------------------------------------------------------------------------- model class
def model_class_for(model_type: str) -> type[transformers.PreTrainedModel]:
    """The ``*ForConditionalGeneration`` class for a config ``model_type``; a clear error for anything else."""
    class_name = MODEL_CLASSES.get(model_type)
    if class_name is None:
        raise ValueError(
            f"Unsupported model_type {model_type!r} in config.json. This toolkit loads Qwen vision-language "
            f"models only: {', '.join(sorted(MODEL_CLASSES))}."
        )
    cls = getattr(transformers, class_name, None)
    if cls is None:
        raise ValueError(
            f"model_type {model_type!r} needs transformers.{class_name}, which transformers "
            f"{transformers.__version__} does not provide; upgrade transformers."
        )
    return cls


def resolve_dtype(dtype: str | torch.dtype | None) -> str | torch.dtype | None:
    """Accept ``torch.bfloat16``, ``"bf16"``, ``"bfloat16"``, ``"auto"``... and return what from_pretrained takes."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = dtype.lower().removeprefix("torch.")
    if key == "auto":
        return "auto"
    if key not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of auto, {', '.join(sorted(_DTYPES))}.")
    return _DTYPES[key]


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or not _HUB_ID.match(name)


def _not_cached_message(name: str, what: str, exc: Exception) -> str:
    folder = f"/models/{name.rstrip('/').split('/')[-1]}"
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return (
        f"Could not load the {what} {name!r}: it is not a local folder, and its files are not in the local "
        f"Hugging Face cache (HF_HOME={cache}) while the hub is unreachable (offline or no network). Download "
        f"it on a machine with internet, e.g. `huggingface-cli download {name} --local-dir {folder}`, copy the "
        f"folder here and pass its path instead (--model_name_or_path {folder}). Cause: {exc}"
    )


def _read_config_dict(name_or_path: str | os.PathLike[str], hub_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """config.json as a dict, with errors that say whether the folder is missing or the hub is unreachable."""
    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"{local} is a folder but has no config.json; is it a model folder?")
        name = str(local)
    elif _looks_like_path(name):
        raise ModelNotFoundError(f"Model folder {name} does not exist; pass an existing local model folder.")
    try:
        config_dict, _ = transformers.PretrainedConfig.get_config_dict(name, **hub_kwargs)
    except OSError as exc:
        if local.is_dir():
            raise
        raise ModelNotFoundError(_not_cached_message(name, "model", exc)) from exc
    return config_dict


def load_config(name_or_path: str | os.PathLike[str], **hub_kwargs: Any) -> transformers.PretrainedConfig:
    """The model config, after checking that its ``model_type`` is one of :data:`MODEL_CLASSES`."""
    config_dict = _read_config_dict(name_or_path, hub_kwargs)
    model_type = config_dict.get("model_type")
    if not model_type:
        raise ValueError(f"config.json of {name_or_path} has no model_type; cannot choose a model class.")
    config_class = model_class_for(model_type).config_class
    return config_class.from_pretrained(str(Path(name_or_path).expanduser()), **hub_kwargs)


def load_model(
    name_or_path: str | os.PathLike[str],
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    **kw: Any,
) -> transformers.PreTrainedModel:
    """Load a Qwen-VL model; the class comes from ``config.model_type``.

    ``dtype``: a torch dtype, ``"bf16"``-style string or ``"auto"`` (None: transformers' default).
    ``attn_implementation``: ``"sdpa"``, ``"flash_attention_2"``, ``"sdpa_packed"``, ``"eager"``, ``"auto"`` (the
    best installed one, :func:`qwenvl.model.attention.select_attn_implementation`)... (None: transformers' default).
    Other keyword arguments go to ``from_pretrained`` (``device_map``, ``revision``, ``local_files_only``...).
    ``trust_remote_code`` is refused: every supported architecture ships with transformers.
    """
    if kw.pop("trust_remote_code", False):
        raise ValueError(
            "trust_remote_code is not supported: Qwen-VL models load with transformers' own classes."
        )
    hub_kwargs = {key: kw[key] for key in _HUB_KWARGS if key in kw}
    config = load_config(name_or_path, **hub_kwargs)
    cls = model_class_for(config.model_type)
    if dtype is not None:
        kw["dtype"] = resolve_dtype(dtype)
    if attn_implementation is not None:
        kw["attn_implementation"] = select_attn_implementation(attn_implementation)
    return cls.from_pretrained(str(Path(name_or_path).expanduser()), config=config, **kw)


def build_random_model(
    config_dir: str | os.PathLike[str],
    dtype: str | torch.dtype = torch.bfloat16,
    device: str | torch.device = "cuda",
    attn_implementation: str | None = None,
) -> transformers.PreTrainedModel:
    """A randomly initialised model of the architecture in ``config_dir/config.json`` (no weights needed).

    Parameters are created directly on ``device`` in ``dtype``; ``device="meta"`` builds the module tree
    without allocating memory (for parameter counts). Used to benchmark the real 4B architecture
    (``configs/qwen3_vl_4b``) on a GPU without downloading its weights.
    """
    torch_dtype = resolve_dtype(dtype)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"build_random_model needs a concrete dtype (bf16, fp16, fp32), got {dtype!r}.")
    config = load_config(config_dir, local_files_only=True)
    cls = model_class_for(config.model_type)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = select_attn_implementation(attn_implementation)
    with torch.device(device):
        model = cls._from_config(config, **kwargs)
    if model.dtype != torch_dtype:  # transformers versions that ignore the dtype keyword here
        model = model.to(torch_dtype)
    return model


# ------------------------------------------------------------------------------------------- processor
@dataclass(frozen=True)
class PixelBudget:
    """The image processor's resize limits: image area in ``[min_pixels, max_pixels]`` on a ``factor`` grid."""

    min_pixels: int
    max_pixels: int
    patch_size: int = 16
    merge_size: int = 2

    @property
    def factor(self) -> int:
        """Side of the pixel block that becomes one LLM visual token (32 for Qwen3-VL)."""
        return self.patch_size * self.merge_size


def _image_processor(processor: Any) -> Any:
    return getattr(processor, "image_processor", processor)


def pixel_budget(processor: Any) -> PixelBudget:
    """The limits a processor (or its image processor) will actually apply."""
    image_processor = _image_processor(processor)
    min_pixels, max_pixels = image_pixel_limits(image_processor)
    if min_pixels is None or max_pixels is None:
        size = getattr(image_processor, "size", None)
        raise ValueError(f"{type(image_processor).__name__} has no min/max pixel limits (size={size!r}).")
    return PixelBudget(
        min_pixels=int(min_pixels),
        max_pixels=int(max_pixels),
        patch_size=int(image_processor.patch_size),
        merge_size=int(image_processor.merge_size),
    )


def set_pixel_limits(
    processor: Any, min_pixels: int | None = None, max_pixels: int | None = None
) -> PixelBudget:
    """Set the image processor's pixel limits (:func:`qwenvl.compat.set_image_pixel_limits`: where this
    transformers reads them). A limit left as None keeps its value."""
    image_processor = _image_processor(processor)
    current = pixel_budget(image_processor)
    new_min = current.min_pixels if min_pixels is None else int(min_pixels)
    new_max = current.max_pixels if max_pixels is None else int(max_pixels)
    if new_min <= 0 or new_max <= 0:
        raise ValueError(f"min_pixels and max_pixels must be positive, got {new_min} and {new_max}.")
    if new_min > new_max:
        raise ValueError(
            f"min_pixels ({new_min}) exceeds max_pixels ({new_max}): small images would be enlarged past the "
            f"budget. Pass a smaller min_pixels (the guide's default is 784) together with max_pixels."
        )
    set_image_pixel_limits(image_processor, new_min, new_max)
    return pixel_budget(image_processor)


def load_processor(
    name_or_path: str | os.PathLike[str],
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    **kw: Any,
) -> transformers.ProcessorMixin:
    """``AutoProcessor.from_pretrained`` (no remote code) with the image pixel limits applied."""
    if kw.pop("trust_remote_code", False):
        raise ValueError("trust_remote_code is not supported: Qwen-VL processors ship with transformers.")
    name = (
        str(Path(name_or_path).expanduser())
        if Path(name_or_path).expanduser().is_dir()
        else str(name_or_path)
    )
    if not Path(name).is_dir() and _looks_like_path(name):
        raise ModelNotFoundError(
            f"Processor folder {name} does not exist; pass an existing local model folder."
        )
    try:
        processor = transformers.AutoProcessor.from_pretrained(name, **kw)
    except OSError as exc:
        if Path(name).is_dir():
            raise
        raise ModelNotFoundError(_not_cached_message(name, "processor", exc)) from exc
    if min_pixels is not None or max_pixels is not None:
        set_pixel_limits(processor, min_pixels, max_pixels)
    return processor


# ---------------------------------------------------------------------------------------- token counts
def smart_resize(height: int, width: int, budget: PixelBudget) -> tuple[int, int]:
    """The (height, width) the image processor resizes an image to under a processor's ``budget``
    (:func:`qwenvl.flare.pixels.smart_resize`, the arithmetic on the processor's own grid)."""
    return pixels.smart_resize(height, width, budget.min_pixels, budget.max_pixels, budget.factor)


def image_token_count(height: int, width: int, processor: Any, limits: Any = None) -> int:
    """Number of ``<|image_pad|>`` tokens an image of this size becomes (``image_grid_thw.prod() / merge**2``).

    ``processor`` is a processor, an image processor or a :class:`PixelBudget`; ``limits`` (anything with
    ``min_pixels`` / ``max_pixels``, e.g. a :class:`qwenvl.flare.pixels.ImageBudget`) replaces its pixel limits,
    as a processor call with ``size=limits.processor_size()`` does.
    """
    budget = processor if isinstance(processor, PixelBudget) else pixel_budget(processor)
    if limits is not None:
        budget = replace(budget, min_pixels=int(limits.min_pixels), max_pixels=int(limits.max_pixels))
    new_h, new_w = smart_resize(height, width, budget)
    return (new_h // budget.factor) * (new_w // budget.factor)
