"""What the data check checks and with which settings: the command line of ``scripts/test_data_loading.py``.

The model, pixel limits and maximum length default to the training guide's values (:mod:`qwenvl.flare.defaults`);
the other defaults are the data check's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwenvl.flare import defaults
from qwenvl.flare.paths import REPO_ROOT

DEMO_MODEL_DIR = REPO_ROOT / "demo" / "model"
DEMO_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
DEFAULT_NUM_IMAGES = 25
DEFAULT_NUM_SAMPLES = 8
DEFAULT_SEED = 42
CONVERT_COMMAND = "uv run python data_conversion/convert_flare_to_qwen3vl.py"

Emit = Callable[[str], None]  # where the check writes its report, one line per call


@dataclass
class DataCheckConfig:
    """What to check and with which settings (the command line of ``scripts/test_data_loading.py``)."""

    datasets: list[str] | None = None  # None: every registered labelled training dataset
    num_images: int = DEFAULT_NUM_IMAGES
    all_images: bool = False
    num_samples: int = DEFAULT_NUM_SAMPLES
    model_path: str = defaults.MODEL
    demo_model: bool = False
    demo_model_dir: Path = DEMO_MODEL_DIR
    model_max_length: int = defaults.MODEL_MAX_LENGTH
    min_pixels: int = defaults.MIN_PIXELS
    max_pixels: int = defaults.MAX_PIXELS
    converted_dir: Path | None = None  # None: $FLARE25_CONVERTED_DIR, else <repo>/converted_data
    seed: int = DEFAULT_SEED
