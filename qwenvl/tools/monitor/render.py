"""The text dashboard: a :class:`~qwenvl.tools.monitor.snapshot.Snapshot` (and optionally this machine's
:class:`~qwenvl.tools.monitor.system.SystemStats`) as lines of text - header, state, progress bar, metrics,
one-line loss / learning-rate / eval charts, machine load and warnings.

Pure formatting: nothing here reads files or decides a state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from qwenvl.tools.monitor.snapshot import Snapshot, fmt_clock, fmt_duration
from qwenvl.tools.monitor.states import CRASHED, FINISHED, MISSING, RUNNING, STOPPED, UNKNOWN, WAITING
from qwenvl.tools.monitor.system import SystemStats

CHART_WIDTH = 60
SPARK_CHARS = "▁▂▃▄▅▆▇█"
NON_FINITE_MARK = "×"
RULE = "=" * 80


def _buckets(values: Sequence[float], width: int) -> list[float]:
    """``values`` reduced to at most ``width`` bucket means (a bucket with a non-finite value is NaN)."""
    n = len(values)
    if n <= width:
        return list(values)
    out = []
    for i in range(width):
        chunk = values[i * n // width : (i + 1) * n // width]
        out.append(sum(chunk) / len(chunk) if all(math.isfinite(v) for v in chunk) else math.nan)
    return out


def sparkline(values: Sequence[float], width: int = CHART_WIDTH) -> str:
    """A one-line chart: ``▁`` is the minimum, ``█`` the maximum, ``×`` a NaN / infinite value."""
    points = _buckets(values, width)
    finite = [v for v in points if math.isfinite(v)]
    if not finite:
        return NON_FINITE_MARK * len(points)
    lo, hi = min(finite), max(finite)
    top = len(SPARK_CHARS) - 1
    chars = []
    for v in points:
        if not math.isfinite(v):
            chars.append(NON_FINITE_MARK)
        elif hi == lo:
            chars.append(SPARK_CHARS[top // 2])
        else:
            chars.append(SPARK_CHARS[round((v - lo) / (hi - lo) * top)])
    return "".join(chars)


def progress_bar(percent: float | None, width: int = 40) -> str:
    """``[██████░░░░]`` for a percentage."""
    if percent is None:
        return "[" + "?" * width + "]"
    filled = int(round(width * min(max(percent, 0.0), 100.0) / 100.0))
    return "[" + "█" * filled + "░" * (width - filled) + "]"


def _f(v: float | None, spec: str) -> str:
    return "?" if v is None else format(v, spec)


def _gib(mb: float | None) -> str:
    return "?" if mb is None else f"{mb / 1024:.1f}"


_ICONS = {
    MISSING: "⏳",
    WAITING: "⏳",
    RUNNING: "🟢",
    FINISHED: "✅",
    STOPPED: "⏸️",
    CRASHED: "❌",
    UNKNOWN: "❔",
}


def _progress_lines(s: Snapshot) -> list[str]:
    pct = f" ({s.percent:.1f}%)" if s.percent is not None else ""
    epoch = (
        f"   epoch {s.epoch:.2f}" + (f"/{s.num_train_epochs:g}" if s.num_train_epochs else "")
        if s.epoch is not None
        else ""
    )
    eta = "done" if s.state == FINISHED else fmt_duration(s.eta_s) if s.state == RUNNING else "-"
    if s.step_time_s is not None:
        per = f"{s.step_time_s:.2f} s/step (median of the last {s.step_time_samples} step times)"
    else:
        per = "step time not known yet"
    lines = [
        f"⏱️  Progress:  step {s.step if s.step is not None else 0}/{s.max_steps or '?'}{pct}{epoch}",
        f"   {progress_bar(s.percent)}",
        f"   Elapsed: {fmt_duration(s.elapsed_s)}   ETA: {eta}   {per}",
    ]
    if s.start_time:
        lines.append(
            f"   Started {s.start_time}"
            + (f", resumed at step {s.resumed_at_step}" if s.resumed_at_step else "")
        )
    return lines


def _metric_lines(s: Snapshot) -> list[str]:
    lines = [
        f"📊 Loss:      {_f(s.loss, '.4f')}   moving average (last {s.window}): {_f(s.loss_avg, '.4f')}",
        f"   LR:        {_f(s.learning_rate, '.3e')}   grad norm: {_f(s.grad_norm, '.3f')}",
    ]
    if s.eval_loss is not None:
        on = f" on {s.eval_records}" if s.eval_records else ""
        lines.append(f"   Eval loss: {s.eval_loss:.4f} (step {s.eval_step}){on}")
    if s.generation:
        values = ", ".join(f"{k} {v:.4g}" for k, v in s.generation["values"].items())
        on = f" on {s.generation['records']}" if s.generation.get("records") else ""
        lines.append(f"   Generation metrics (step {s.generation['step']}{on}): {values}")
    if s.samples_per_s is not None or s.tokens_per_s is not None:
        lines.append(
            f"   Throughput: {_f(s.samples_per_s, '.2f')} samples/s, {_f(s.tokens_per_s, '.0f')} tokens/s"
        )
    if s.final_train_loss is not None:
        lines.append(f"   Trainer's closing train_loss: {s.final_train_loss:.4f}")
    return lines


def _chart_lines(s: Snapshot, width: int) -> list[str]:
    if not s.losses:
        return ["📉 Loss history: no logged step yet"]
    steps = [st for st, _ in s.losses]
    values = [v for _, v in s.losses]
    finite = [v for v in values if math.isfinite(v)]
    span = f"[{min(finite):.4f} .. {max(finite):.4f}]" if finite else "[no finite value]"
    lines = [
        f"📉 Loss history: steps {steps[0]}-{steps[-1]}, {len(values)} logged",
        f"   loss {sparkline(values, width)}  {span}",
    ]
    if len(s.learning_rates) > 1:
        lrs = [v for _, v in s.learning_rates]
        lines.append(f"   lr   {sparkline(lrs, width)}  [{min(lrs):.2e} .. {max(lrs):.2e}]")
    if len(s.eval_losses) > 1:
        ev = [v for _, v in s.eval_losses]
        lines.append(f"   eval {sparkline(ev, width)}  [{min(ev):.4f} .. {max(ev):.4f}]")
    return lines


def _system_lines(s: Snapshot, sys_stats: SystemStats | None) -> list[str]:
    lines = ["🖥️  Machine:"]
    if sys_stats is not None:
        for g in sys_stats.gpus:
            temp = f"{g.temperature_c:.0f}°C" if g.temperature_c is not None else "?"
            lines.append(
                f"   GPU {g.index} {g.name}: util {_f(g.util_percent, '.0f')}%   "
                f"memory {_gib(g.mem_used_mb)}/{_gib(g.mem_total_mb)} GiB   temperature {temp}"
            )
        if not sys_stats.gpus and sys_stats.gpu_note:
            lines.append(f"   GPU: {sys_stats.gpu_note}")
        lines.append(
            f"   CPU {_f(sys_stats.cpu_percent, '.0f')}%   RAM {_gib(sys_stats.ram_used_mb)}/{_gib(sys_stats.ram_total_mb)} GiB"
        )
    if s.rss_mb is not None:
        gpu = (
            f"   GPU allocated {_gib(s.gpu_mem_mb)} GiB (peak {_gib(s.gpu_peak_mb)} GiB)"
            if s.gpu_mem_mb is not None
            else ""
        )
        lines.append(
            f"   Training process (rank 0, last step): RSS {_gib(s.rss_mb)} GiB (peak {_gib(s.peak_rss_mb)} GiB){gpu}"
        )
    return lines if len(lines) > 1 else []


def format_snapshot(s: Snapshot, sys_stats: SystemStats | None = None, width: int = CHART_WIDTH) -> str:
    """The snapshot as text: header, state, progress, metrics, loss chart, machine, warnings."""
    lines = [RULE, f"TRAINING MONITOR  {s.output_dir}   ({fmt_clock(s.checked_at)})", RULE]
    lines.append(f"{_ICONS.get(s.state, '')} State: {s.state.upper()} - {s.message}")
    if s.state == MISSING:
        return "\n".join(lines + [RULE])
    if s.state == WAITING and s.step is None:
        lines += [""] + _system_lines(s, sys_stats)
        return "\n".join(lines + [RULE])
    if s.resumed_at_step and s.state != CRASHED:
        lines.append(f"   (resumed at step {s.resumed_at_step})")
    lines += [""] + _progress_lines(s) + [""] + _metric_lines(s) + [""] + _chart_lines(s, width)
    system = _system_lines(s, sys_stats)
    if system:
        lines += [""] + system
    if s.warnings:
        lines += [""] + [f"⚠️  {w}" for w in s.warnings]
    return "\n".join(lines + [RULE])
