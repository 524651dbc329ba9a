#!/usr/bin/env python
r"""Score FLARE25 challenge-format predictions against raw ground truth; print Markdown tables, write JSON.

    uv run python scripts/score_predictions.py --predictions predictions.json \
        --ground_truth organized_dataset/validation-public --output metrics.json

Report generation gets BLEU-4 and ROUGE-L (lexical stand-ins); the GREEN score only with
``--green_model /local/GREEN-model-folder``. Definitions: docs/metrics.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwenvl.eval.scoring import metrics_markdown, score_files  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, help="JSON list: the input records with Answer filled in")
    p.add_argument(
        "--ground_truth",
        required=True,
        help="a raw <dataset>_questions_*.json file, or a folder searched for them (e.g. validation-public)",
    )
    p.add_argument("--output", default="metrics.json", help="where to write the metrics JSON")
    p.add_argument(
        "--green_model",
        default=None,
        help="local folder of a GREEN judge model (e.g. GREEN-radllama2-7b); without it no GREEN score",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        metrics = score_files(args.predictions, args.ground_truth, args.green_model)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(metrics_markdown(metrics))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"metrics written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
