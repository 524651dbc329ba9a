"""Summarise a dry run from its live record: the loss of every step, peak memory, and a verdict.

    python -m qwenvl.train.dry_run OUTPUT_DIR --expected_steps 5 [--exit_status N]

Exit status 0 only when training exited cleanly, every expected step logged a loss, and every loss is finite.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

from qwenvl.flare.runfiles import TRAIN_LOG_JSONL


def logged_steps(output_dir: Path) -> list[dict]:
    """The records of ``train_log.jsonl`` that carry a step's loss (none when the file is missing)."""
    path = output_dir / TRAIN_LOG_JSONL
    records = [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
    return [r for r in records if "loss" in r]


def summarize(output_dir: Path, expected_steps: int, exit_status: int = 0) -> tuple[bool, str]:
    steps = logged_steps(output_dir)
    lines = ["=" * 60, "DRY RUN SUMMARY", "=" * 60]
    for r in steps:
        lines.append(
            f"  step {r['step']:>4}  loss {r['loss']:.4f}  lr {r.get('learning_rate', float('nan')):.3e}"
            f"  grad_norm {r.get('grad_norm', float('nan')):.3f}"
        )
    gpu = max((r.get("gpu_peak_mb", 0) for r in steps), default=0)
    rss = max((r.get("peak_rss_mb", 0) for r in steps), default=0)
    if gpu:
        lines.append(f"  peak GPU memory (rank 0, allocated): {gpu / 1024:.2f} GiB")
    lines.append(f"  peak RSS (rank 0 process): {rss / 1024:.2f} GiB")
    problems = []
    if exit_status != 0:
        problems.append(f"training exited with status {exit_status} (see the messages above)")
    if len(steps) < expected_steps:
        problems.append(f"only {len(steps)} of {expected_steps} steps logged a loss")
    bad = [r["step"] for r in steps if not math.isfinite(r["loss"])]
    if bad:
        problems.append(
            f"loss is NaN or infinite at steps {bad}: lower the learning rate (LR=5e-6), use bf16 rather than "
            "fp16, lower MAX_GRAD_NORM, and check the data with scripts/test_data_loading.py"
        )
    ok = not problems
    lines += [f"  PROBLEM: {p}" for p in problems] or ["  all steps finite: ready for full training"]
    lines.append("=" * 60)
    return ok, "\n".join(lines)


def main(
    argv: list[str] | None = None,
    *,
    description: str | None = __doc__,
    expected_steps: int = 5,
    details: Callable[[Path], str] | None = None,
) -> int:
    """The command line; a training mode with more to show per step passes its ``description``, its default
    ``expected_steps`` and ``details`` (output folder -> text printed after the verdict)."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("output_dir", type=Path)
    ap.add_argument("--expected_steps", type=int, default=expected_steps)
    ap.add_argument("--exit_status", type=int, default=0)
    a = ap.parse_args(argv)
    ok, text = summarize(a.output_dir, a.expected_steps, a.exit_status)
    print(text)
    if details is not None:
        print(details(a.output_dir))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
