#!/usr/bin/env python
r"""Score FLARE25 challenge-format predictions against raw ground truth; print Markdown tables, write JSON.

    uv run python scripts/score_predictions.py --predictions predictions.json \
        --ground_truth organized_dataset/validation-public --output metrics.json

Report generation gets BLEU-4 and ROUGE-L (lexical stand-ins); the GREEN score only with
``--green_model /local/GREEN-model-folder``. Definitions: docs/metrics.md.
"""

import sys

from qwenvl.eval.cli import parse_score_args as parse_args
from qwenvl.eval.cli import score_main as main

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
