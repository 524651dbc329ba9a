#!/usr/bin/env python
r"""Evaluate a checkpoint on FLARE25 data: generate, write challenge-format predictions, score, compare.

    uv run python scripts/evaluate_flare.py --model_path output/qwen3vl_flare25_starter \
        --split val --output_dir eval/finetuned [--datasets retino BUSI-det ...] [--compare eval/base]

Datasets are FLARE folder names (``BUSI-det``) or registry names (``flare_busi_det``, ``flare_busi_det_val``);
default: every converted dataset of the split. Pixel limits default to the ones the checkpoint was trained with
(its run_info.json, else its processor). Writes predictions.json, raw_outputs.jsonl and summary.json; for the
labelled ``val`` split also metrics.json, metrics.md and metrics.png. See docs/evaluation.md.
"""

import sys

from qwenvl.eval.cli import evaluate_main as main
from qwenvl.eval.cli import parse_evaluate_args as parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
