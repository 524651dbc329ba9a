"""Summarise a GRPO dry run (``DRY_RUN=1 scripts/grpo_qwen3_4b_flare.sh``) from its live record: the
supervised dry run's verdict (every step logged, every loss finite) plus each step's rewards, KL and
completion length.

    python -m qwenvl.train.grpo_dry_run OUTPUT_DIR --expected_steps 3 [--exit_status N]
"""

from __future__ import annotations

import sys
from pathlib import Path

from qwenvl.train import dry_run

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
    lines = []
    for r in dry_run.logged_steps(output_dir):
        cells = [f"{k.split('/')[-2] if k.count('/') > 1 else k} {r[k]:.3g}" for k in COLUMNS if k in r]
        cells += [f"{k} {v:.3g}" for k, v in r.items() if k.startswith("reward_task/")]
        lines.append(f"  step {r['step']:>4}  " + "  ".join(cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    return dry_run.main(
        argv,
        description=__doc__,
        expected_steps=3,
        details=lambda out: "GRPO rewards per step:\n" + ("\n".join(reward_lines(out)) or "  (none logged)"),
    )


if __name__ == "__main__":
    sys.exit(main())
