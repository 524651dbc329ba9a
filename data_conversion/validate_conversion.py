"""Validate converted Qwen3-VL JSON files (see data_conversion/README.md, "Validation").

``uv run python data_conversion/validate_conversion.py [--input_dir DIR] [--save_report FILE]`` from the
repository root, or ``uv run python validate_conversion.py --input_dir ../converted_data`` from inside
``data_conversion/`` (the project is installed editable, so its packages import from either folder). Exit
status: 0 when there is no error (warnings allowed), 1 on any error, 2 when the folder does not exist.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from data_conversion.validation import describe_issues, validate, validation_table
from qwenvl.flare.jsonio import write_json_atomic
from qwenvl.flare.paths import default_converted_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Check converted FLARE25 Qwen3-VL JSON files and their images."
    )
    parser.add_argument(
        "--input_dir",
        "--converted_dir",
        dest="input_dir",
        type=Path,
        default=None,
        help=f"folder of <dataset>_<split>.json files (default: {default_converted_dir()})",
    )
    parser.add_argument("--save_report", type=Path, default=None, help="write the full report as JSON here")
    parser.add_argument("--max_issues", type=int, default=50, help="errors / warnings listed on screen")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 140)
    try:
        report = validate(args.input_dir or default_converted_dir())
    except FileNotFoundError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 2
    console.print(validation_table(report))
    for kind, style in (("errors", "red"), ("warnings", "yellow")):
        if report[kind]:
            console.print(f"[bold {style}]{len(report[kind])} {kind}[/]")
            for line in describe_issues(report[kind], args.max_issues):
                console.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)
    if args.save_report:
        write_json_atomic(args.save_report, report)
        console.print(f"Report written to {args.save_report}", highlight=False)
    verdict = "[bold green]PASSED[/]" if report["ok"] else "[bold red]FAILED[/]"
    console.print(f"Validation {verdict}: {report['n_errors']} errors, {report['n_warnings']} warnings")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
