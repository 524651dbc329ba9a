"""Model loading, processor pixel limits, visual-token counting and the embedded tiny Qwen3-VL."""

from qwenvl.model.loading import (
    MODEL_CLASSES,
    ModelNotFoundError,
    PixelBudget,
    build_random_model,
    image_token_count,
    load_config,
    load_model,
    load_processor,
    model_class_for,
    pixel_budget,
    resolve_dtype,
    set_pixel_limits,
    smart_resize,
)
from qwenvl.model.tiny import TOKEN_IDS, build_tiny_model, chat_template

__all__ = [
    "MODEL_CLASSES",
    "TOKEN_IDS",
    "ModelNotFoundError",
    "PixelBudget",
    "build_random_model",
    "build_tiny_model",
    "chat_template",
    "image_token_count",
    "load_config",
    "load_model",
    "load_processor",
    "model_class_for",
    "pixel_budget",
    "resolve_dtype",
    "set_pixel_limits",
    "smart_resize",
]
