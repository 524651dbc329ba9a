"""The command line of ``scripts/test_data_loading.py``: argument parsing and the entry point."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from qwenvl.flare import defaults
from qwenvl.flare.pixels import POLICIES
from qwenvl.tools.data_check.config import (
    DEFAULT_NUM_IMAGES,
    DEFAULT_NUM_SAMPLES,
    DEFAULT_SEED,
    DEMO_MODEL_DIR,
    DataCheckConfig,
)
from qwenvl.tools.data_check.report import run_data_checks


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/test_data_loading.py``."""
    p = argparse.ArgumentParser(
        prog="test_data_loading.py",
        description="Check the registered training data (annotations, images) and push real samples through the "
        "training code path with the model's processor. Exit status 0 only when every check passes.",
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        metavar="NAME",
        help="Registered names (or JSON paths) to check; default: every registered labelled training dataset.",
    )
    p.add_argument(
        "--num_images",
        type=int,
        default=DEFAULT_NUM_IMAGES,
        help=f"Images to decode, spread across datasets (default {DEFAULT_NUM_IMAGES}). Every image is checked "
        "for existence regardless.",
    )
    p.add_argument("--all_images", action="store_true", help="Decode every image instead of a sample.")
    p.add_argument(
        "--num_samples",
        type=int,
        default=DEFAULT_NUM_SAMPLES,
        help=f"Samples to encode in the Model Tests, spread across datasets (default {DEFAULT_NUM_SAMPLES}).",
    )
    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--model_path",
        default=defaults.MODEL,
        help=f"Model folder or hub id whose processor to use (default {defaults.MODEL}).",
    )
    model.add_argument(
        "--demo_model",
        action="store_true",
        help=f"Use the embedded tiny Qwen3-VL in {DEMO_MODEL_DIR} (built there if absent).",
    )
    p.add_argument(
        "--model_max_length",
        type=int,
        default=defaults.MODEL_MAX_LENGTH,
        help=f"Longest sample in tokens (default {defaults.MODEL_MAX_LENGTH}), as in training.",
    )
    p.add_argument(
        "--pixel_policy",
        default="auto",
        choices=POLICIES,
        help="Image budgets, as in training: per_dataset (each dataset the table's), global (one budget: "
        "--min/--max_pixels), auto (default: global when a pixel limit is given, else per_dataset).",
    )
    p.add_argument(
        "--max_pixels",
        type=int,
        default=None,
        help=f"Most pixels per image under one global budget, as in training (default {defaults.MAX_PIXELS}).",
    )
    p.add_argument(
        "--min_pixels",
        type=int,
        default=None,
        help=f"Smallest image area, as in training (default {defaults.MIN_PIXELS}).",
    )
    p.add_argument(
        "--converted_dir",
        type=Path,
        default=None,
        help="Converted-data folder (default $FLARE25_CONVERTED_DIR, else <repo>/converted_data).",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"Seed of the image and sample choice (default {DEFAULT_SEED}).",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/test_data_loading.py``: 0 when every section passed, 1 otherwise (2 for an
    argument that is not positive)."""
    args = build_parser().parse_args(argv)
    limits = [v for v in (args.min_pixels, args.max_pixels) if v is not None]
    if min(args.num_images, args.num_samples, args.model_max_length, *limits) < 1:
        print("error: --num_images, --num_samples, --model_max_length and the pixel limits must be positive")
        return 2
    if args.converted_dir is not None:
        os.environ["FLARE25_CONVERTED_DIR"] = str(args.converted_dir.expanduser().resolve())
    cfg = DataCheckConfig(
        datasets=args.datasets,
        num_images=args.num_images,
        all_images=args.all_images,
        num_samples=args.num_samples,
        model_path=args.model_path,
        demo_model=args.demo_model,
        model_max_length=args.model_max_length,
        pixel_policy=args.pixel_policy,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        converted_dir=args.converted_dir,
        seed=args.seed,
    )
    result = run_data_checks(cfg)
    return 0 if result.passed else 1
