"""Summarise a GRPO dry run (``DRY_RUN=1 scripts/grpo_qwen3_4b_flare.sh``) from its live record: the
supervised dry run's verdict (every step logged, every loss finite) plus each step's rewards, KL and
completion length.

    python -m qwenvl.train.grpo_dry_run OUTPUT_DIR --expected_steps 3 [--exit_status N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qwenvl.flare.runfiles import TRAIN_LOG_JSONL
from qwenvl.train.dry_run import summarize

COLUMNS = (
    "reward",
    "rewards/answer/mean",
    "rewards/format/mean",
    "kl",
    "completions/mean_length",
    "step_time",
)


def reward_lines(output_dir: Path) -> list[str]:
    """One line per logged step: the columns of :data:`COLUMNS` and the per-task-type rewards."""
    path = output_dir / TRAIN_LOG_JSONL
    records = [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
    lines = []
    for r in (r for r in records if "loss" in r):
        cells = [f"{k.split('/')[-2] if k.count('/') > 1 else k} {r[k]:.3g}" for k in COLUMNS if k in r]
        cells += [f"{k} {v:.3g}" for k, v in r.items() if k.startswith("reward_task/")]
        lines.append(f"  step {r['step']:>4}  " + "  ".join(cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output_dir", type=Path)
    ap.add_argument("--expected_steps", type=int, default=3)
    ap.add_argument("--exit_status", type=int, default=0)
    a = ap.parse_args(argv)
    ok, text = summarize(a.output_dir, a.expected_steps, a.exit_status)
    print(text)
    print("GRPO rewards per step:\n" + ("\n".join(reward_lines(a.output_dir)) or "  (none logged)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
