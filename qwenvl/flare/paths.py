"""Default locations, resolved from the repository root so every script lands in the same folders whether it
is run from the repository root or from inside ``data_conversion/``."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_raw_dir() -> Path:
    """The raw FLARE25 tree: ``$FLARE25_ROOT``, else ``<repo>/organized_dataset``."""
    env = os.environ.get("FLARE25_ROOT")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "organized_dataset"


def default_converted_dir() -> Path:
    """Converted Qwen3-VL JSON: ``$FLARE25_CONVERTED_DIR``, else ``<repo>/converted_data``."""
    env = os.environ.get("FLARE25_CONVERTED_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "converted_data"
