"""What the data check checks and with which settings: the command line of ``scripts/test_data_loading.py``.

The model, image budgets and maximum length default to training's (:mod:`qwenvl.flare.defaults`; each dataset
its own image budget, as ``--pixel_policy auto`` gives it); the other defaults are the data check's own.
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
    pixel_policy: str = "auto"  # as training's --pixel_policy: per dataset unless a pixel limit is given
    min_pixels: int | None = None  # None: the guide's (784), the global / fallback budget as in training
    max_pixels: int | None = None  # None: the guide's (50176)
    converted_dir: Path | None = None  # None: $FLARE25_CONVERTED_DIR, else <repo>/converted_data
    seed: int = DEFAULT_SEED
