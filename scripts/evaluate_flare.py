#!/usr/bin/env python
"""Evaluate a checkpoint on FLARE25 data: predictions in challenge format, metrics, comparison.

    uv run python scripts/evaluate_flare.py --model_path output/qwen3vl_flare25_starter --split val --output_dir eval/finetuned

`--help` for every option; the code is qwenvl/eval/cli.py.
"""

import sys

from qwenvl.eval.cli import evaluate_main as main
from qwenvl.eval.cli import parse_evaluate_args as parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
