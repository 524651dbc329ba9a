"""The loss chart PNG: loss with its moving average and eval loss, learning rate(s) and grad norm over steps,
drawn from the run folder with matplotlib (imported only when a plot is asked for).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from qwenvl.tools.monitor.runfolder import numeric_field, read_run_log
from qwenvl.tools.monitor.snapshot import DEFAULT_WINDOW, run_status


def _rolling(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc = (acc + [v])[-window:]
        finite = [x for x in acc if math.isfinite(x)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def write_plot(
    output_dir: str | os.PathLike[str], path: str | os.PathLike[str], window: int = DEFAULT_WINDOW
) -> Path | None:
    """Write a PNG of loss (with its moving average and eval loss), learning rate and grad norm over steps.

    Returns the path, or None when the run has no logged step yet. Uses matplotlib's Agg canvas directly, so
    it works without a display and leaves pyplot's global state alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    log = read_run_log(output_dir)
    steps = log.steps
    if not steps:
        return None
    x = [r["step"] for r in steps]
    loss = [float(r["loss"]) for r in steps]
    grad = [(r["step"], r["grad_norm"]) for r in steps if numeric_field(r, "grad_norm") is not None]
    fig = Figure(figsize=(10, 8 if grad else 6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(3 if grad else 2, 1, sharex=True)
    ax = axes[0]
    ax.plot(x, loss, lw=0.8, alpha=0.5, label="loss")
    ax.plot(x, _rolling(loss, window), lw=1.8, label=f"moving average ({window})")
    evals = [
        (r.get("step", 0), r["eval_loss"]) for r in log.evals if numeric_field(r, "eval_loss") is not None
    ]
    if evals:
        ax.plot(*zip(*evals), "o-", ms=4, label="eval loss")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    lr_keys = ["learning_rate"] + sorted({k for r in steps for k in r if k.startswith("lr_")})
    for key in lr_keys:
        pts = [(r["step"], r[key]) for r in steps if numeric_field(r, key) is not None]
        if pts:
            axes[1].plot(*zip(*pts), lw=1.2, label=key)
    axes[1].set_ylabel("learning rate")
    axes[1].legend(loc="upper right", fontsize="small")
    if grad:
        axes[2].plot(*zip(*grad), lw=1.0, color="tab:red")
        axes[2].set_ylabel("grad norm")
    for e in log.events:
        if e.get("event") == "start" and e.get("step", 0) > 0:
            for a in axes:
                a.axvline(e["step"], ls="--", color="gray", lw=0.8)
    axes[-1].set_xlabel("step")
    for a in axes:
        a.grid(alpha=0.3)
    status = run_status(log) or "?"
    fig.suptitle(f"{Path(output_dir).resolve().name}: {status}, step {x[-1]}/{log.run.get('max_steps', '?')}")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
