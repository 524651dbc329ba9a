"""Shared, session-scoped fixtures: the embedded tiny model and the demo FLARE25 data, built once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# No test may reach a hub or a logging service.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
# The scripts a test runs use the interpreter running the tests: the locked .venv through uv as the scripts
# do by default, any other environment (CI's second one, .venv-low) as PYTHON= (scripts/_env.sh).
if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
    os.environ.setdefault("PYTHON", sys.executable)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Qwen3-VL (real Qwen tokenizer and chat template), seed 0."""
    from qwenvl.model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny_qwen3vl_seed0", seed=0)


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean miniature FLARE25 tree, 6 records per dataset and split folder."""
    from data_conversion.make_demo_dataset import make_demo_dataset

    out = tmp_path_factory.mktemp("demo") / "organized_dataset"
    make_demo_dataset(out, seed=0, samples_per_split=6)
    return out


@pytest.fixture(scope="session")
def demo_converted(demo_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``demo_raw`` converted (all datasets, train/val/test)."""
    from data_conversion.converter import convert

    out = tmp_path_factory.mktemp("demo_converted")
    from qwenvl.flare.datasets import FLARE_DATASETS

    convert(demo_raw, out, datasets=list(FLARE_DATASETS), splits=("train", "val", "test"), progress=False)
    return out


@pytest.fixture
def registry_at(monkeypatch):
    """Point the dataset registry at a converted folder for one test: ``registry_at(path)``."""
    import qwenvl.data as registry

    def point(path: Path) -> dict:
        monkeypatch.setenv("FLARE25_CONVERTED_DIR", str(path))
        return registry.refresh_registry()

    yield point
    monkeypatch.undo()
    registry.refresh_registry()
