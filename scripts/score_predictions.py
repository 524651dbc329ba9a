#!/usr/bin/env python
"""Score challenge-format predictions against raw ground truth.

    uv run python scripts/score_predictions.py --predictions predictions.json --ground_truth organized_dataset/validation-public

`--help` for every option; the code is qwenvl/eval/cli.py.
"""

import sys

from qwenvl.eval.cli import parse_score_args as parse_args
from qwenvl.eval.cli import score_main as main

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
