"""Generate a miniature FLARE25 2D tree with synthetic images, faithful to the real layout.

All 19 datasets in the four split folders, with the real folder and file names, every answer encoding and
the awkward image modes a converter meets; :mod:`data_conversion.demo_tree` describes the tree and holds the
generator. The images carry learnable signal: each class has its own drawn shape and colour, boxes tightly
surround bright objects (``[x1, y1, x2, y2]`` are the first and last object pixel, inclusive), counts equal
the number of drawn dots, regression values are a bar length or a caliper distance, and reports describe
visible cues.

``--with-defects`` adds the nine defects listed in :func:`demo_defects` (and nothing else): six kinds of damage
and the real data's known noise (a "T" answer, an "A B" answer, a validation image byte-identical to a training
image), so converter and validator tests can check that exactly these are skipped or reported.

Usage::

    uv run python data_conversion/make_demo_dataset.py --output_dir demo_flare25 [--seed 0]
        [--samples_per_split 4] [--with-defects]

Tests and scripts import :func:`make_demo_dataset` and the constants below from this module.
"""

from __future__ import annotations

import argparse
import sys

from data_conversion.demo_tree.builders import COUNT_CELL, INSTANCE_COLOURS, IUGC_MM_PER_PIXEL, bar_geometry
from data_conversion.demo_tree.defects import DEMO_DEFECTS, demo_defects
from data_conversion.demo_tree.drawing import GRAY_LEVELS, PALETTE
from data_conversion.demo_tree.layout import DEFAULT_SAMPLES_PER_SPLIT, DEFAULT_SEED, question_file_name
from data_conversion.demo_tree.specs import DEMO_SPECS
from data_conversion.demo_tree.writing import make_demo_dataset
from qwenvl.flare.raw import SPLIT_FOLDERS

__all__ = [
    "COUNT_CELL",
    "DEFAULT_SAMPLES_PER_SPLIT",
    "DEFAULT_SEED",
    "DEMO_DEFECTS",
    "DEMO_SPECS",
    "GRAY_LEVELS",
    "INSTANCE_COLOURS",
    "IUGC_MM_PER_PIXEL",
    "PALETTE",
    "bar_geometry",
    "demo_defects",
    "format_summary",
    "main",
    "make_demo_dataset",
    "parse_args",
    "question_file_name",
]


def format_summary(summary: dict) -> str:
    """A short human-readable summary of :func:`make_demo_dataset`'s result."""
    n_records = sum(sum(v.values()) for v in summary["records"].values())
    lines = [
        f"Demo FLARE25 tree written to {summary['output_dir']} (seed {summary['seed']}, "
        f"{summary['samples_per_split']} records per question file)",
        f"  {len(summary['records'])} datasets x {len(SPLIT_FOLDERS)} split folders: "
        f"{summary['question_files']} question files, {n_records} records, {summary['images']} images",
    ]
    if summary["defects"]:
        lines.append(f"  {len(summary['defects'])} seeded defects:")
        for d in summary["defects"]:
            where = f"record {d['index']}" if "index" in d else d["file"]
            lines.append(f"    {d['dataset']}/{d['split_folder']} {where}: {d['reason']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", "--output-dir", required=True, help="folder to write the tree into")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (same seed, same bytes)")
    p.add_argument(
        "--samples_per_split",
        "--samples-per-split",
        type=int,
        default=DEFAULT_SAMPLES_PER_SPLIT,
        help="records in every question file",
    )
    p.add_argument(
        "--with-defects",
        "--with_defects",
        dest="with_defects",
        action="store_true",
        help="seed nine realistic defects (missing/corrupt images, empty answer, duplicate, truncated file, "
        "'T' and 'A B' classification answers, a validation image identical to a training image)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = make_demo_dataset(args.output_dir, args.seed, args.samples_per_split, args.with_defects)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
