#!/usr/bin/env python
r"""Evaluate a checkpoint on FLARE25 data: generate, write challenge-format predictions, score, compare.

    uv run python scripts/evaluate_flare.py --model_path output/qwen3vl_flare25_starter \
        --split val --output_dir eval/finetuned [--datasets retino BUSI-det ...] [--compare eval/base]

Datasets are FLARE folder names (``BUSI-det``) or registry names (``flare_busi_det``, ``flare_busi_det_val``);
default: every converted dataset of the split. Pixel limits default to the ones the checkpoint was trained with
(its run_info.json, else its processor). Writes predictions.json, raw_outputs.jsonl and summary.json; for the
labelled ``val`` split also metrics.json, metrics.md and metrics.png. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwenvl.eval.evaluate import SPLITS, EvalOptions, run_evaluation  # noqa: E402


def parse_args(argv: list[str] | None = None) -> EvalOptions:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model_path", required=True, help="checkpoint folder (checkpoint-N or a run's output_dir)"
    )
    p.add_argument("--output_dir", required=True, help="folder for predictions, raw outputs and metrics")
    p.add_argument("--datasets", nargs="+", default=None, help="default: every registered dataset of --split")
    p.add_argument("--split", default="val", choices=SPLITS, help="val (labelled, scored), val_hidden, test")
    p.add_argument("--batch_size", type=int, default=8, help="records per generate call")
    p.add_argument("--min_pixels", type=int, default=None, help="default: the checkpoint's training value")
    p.add_argument("--max_pixels", type=int, default=None, help="default: the checkpoint's training value")
    p.add_argument(
        "--max_new_tokens",
        type=int,
        default=None,
        help="one budget for every task (default per task: 16 classification/numbers, 64 multi-label, "
        "256 detection and reports, 1024 chromosome instances)",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="evaluate only the first N records of each dataset"
    )
    p.add_argument("--compare", default=None, help="another evaluation folder: adds a side-by-side table")
    p.add_argument(
        "--dtype", default=None, help="bfloat16 | float16 | float32 (default: bf16 on GPU, fp32 on CPU)"
    )
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    p.add_argument("--attn_implementation", default=None, help="sdpa (default), flash_attention_2, eager")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    return EvalOptions(
        model_path=a.model_path,
        output_dir=a.output_dir,
        datasets=a.datasets,
        split=a.split,
        batch_size=a.batch_size,
        min_pixels=a.min_pixels,
        max_pixels=a.max_pixels,
        max_new_tokens=a.max_new_tokens,
        limit=a.limit,
        compare=a.compare,
        dtype=a.dtype,
        device=a.device,
        attn_implementation=a.attn_implementation,
        progress=not a.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from qwenvl.model.loading import ModelNotFoundError

    try:
        result = run_evaluation(options)
    except (ModelNotFoundError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 2
    summary = result.summary
    print(
        f"{summary['n_records']} records, {summary['n_unparsable']} unparsable answers, "
        f"{summary['n_failed']} failed inputs, {summary['generation_seconds']} s of generation"
    )
    if result.metrics is None:
        print(
            f"split {options.split!r} carries no answers: predictions only, no metrics. "
            f"Wrote {', '.join(result.files)} to {result.output_dir}"
        )
        return 0
    print((result.output_dir / "metrics.md").read_text(encoding="utf-8"))
    print(f"Wrote {', '.join(result.files)} to {result.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
