"""Convert the raw FLARE25 tree to Qwen3-VL JSON (see data_conversion/README.md).

Runs the same from the repository root (``uv run python data_conversion/convert_flare_to_qwen3vl.py``) and
from inside ``data_conversion/`` (``uv run python convert_flare_to_qwen3vl.py``): default folders are resolved
from the repository root, explicit relative paths from the current directory. ``data_conversion`` and ``qwenvl``
import from either folder because the project is installed (editable) in the environment ``uv`` runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from data_conversion.converter import (
    BOX_FORMATS,
    CLI_SPLITS,
    DEFAULT_SPLITS,
    REPORT_NAME,
    ConversionInputError,
    convert,
    resolve_conversion_datasets,
)
from data_conversion.report import finding_notes
from data_conversion.summary import summary_notes, summary_table, vocabulary_table
from qwenvl.flare.datasets import FLARE_DATASETS, STARTER_DATASETS
from qwenvl.flare.paths import default_converted_dir, default_raw_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert FLARE25 2D question files to Qwen3-VL JSON (<dataset>_<split>.json) plus "
        f"{REPORT_NAME}.",
    )
    parser.add_argument(
        "--input_dir",
        "--base_dir",
        dest="input_dir",
        type=Path,
        default=None,
        help=f"raw FLARE25 tree with training/, validation-public/, ... (default: {default_raw_dir()})",
    )
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=None,
        help=f"where the converted JSON and {REPORT_NAME} go (default: {default_converted_dir()})",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        metavar="NAME",
        default=None,
        help="datasets to convert, any case or registry form (default: the five starters: "
        f"{' '.join(STARTER_DATASETS)}). Valid: {' '.join(FLARE_DATASETS)}",
    )
    parser.add_argument("--all", action="store_true", help="convert all 19 datasets")
    parser.add_argument(
        "--splits",
        nargs="+",
        choices=CLI_SPLITS,
        default=list(DEFAULT_SPLITS),
        help="train <- training/; val <- validation-public/ (+ validation-hidden/ as val_hidden inputs, or "
        "labelled when a _withGT file exists); test <- testing/ (default: train val)",
    )
    parser.add_argument(
        "--box_format",
        choices=BOX_FORMATS,
        default=BOX_FORMATS[0],
        help="detection answers on Qwen3-VL's 0-1000 grid (qwen1000, default) or as original pixels",
    )
    parser.add_argument(
        "--keep_noisy",
        action="store_true",
        help="convert records with known answer noise (a classification answer that is no offered letter, "
        "e.g. 'T'; several letters such as 'A B' on a single-label question) instead of skipping them; "
        "either way they are listed in the report",
    )
    parser.add_argument("--verbose", action="store_true", help="print each skipped record with its reason")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.all and args.datasets:
        parser.error("give either --all or --datasets, not both")
    try:
        datasets = (
            list(FLARE_DATASETS)
            if args.all
            else resolve_conversion_datasets(args.datasets or STARTER_DATASETS)
        )
    except ValueError as e:
        parser.error(str(e))
    input_dir = args.input_dir or default_raw_dir()
    output_dir = args.output_dir or default_converted_dir()
    console = Console(width=None if sys.stdout.isatty() else 140)
    try:
        report = convert(
            input_dir,
            output_dir,
            datasets,
            args.splits,
            box_format=args.box_format,
            verbose=args.verbose,
            progress=not args.no_progress,
            keep_noisy=args.keep_noisy,
        )
    except ConversionInputError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 2
    console.print(summary_table(report))
    vocabularies = vocabulary_table(report)
    if vocabularies is not None:
        console.print(vocabularies)
    for note in summary_notes(report) + finding_notes(report):
        console.print(f"  {note}", highlight=False, soft_wrap=True)
    console.print(f"Converted files and {REPORT_NAME} in {report['settings']['output_dir']}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
