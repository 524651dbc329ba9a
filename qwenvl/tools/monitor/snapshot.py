"""Where a run stands: its state (see :mod:`~qwenvl.tools.monitor.states`), progress, ETA, losses and the
reasons behind a *looks stopped* verdict, decided from what :mod:`~qwenvl.tools.monitor.runfolder` read.

A running run "looks stopped" when the training process is gone from this machine, or its last record is older
than max(``STALE_MIN_S``, ``STALE_STEP_FACTOR`` x the median step time), or, before the first step has a time,
older than ``FIRST_STEP_GRACE_S``. Every verdict comes with a message saying what was seen and what to do.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qwenvl.flare.runfiles import GENERATION_PREFIX, RUN_FILE, TRAIN_LOG_JSONL
from qwenvl.tools.monitor.runfolder import (
    RunLog,
    incomplete_checkpoints,
    latest_checkpoint,
    numeric_field,
    read_run_log,
)
from qwenvl.tools.monitor.states import CRASHED, FINISHED, MISSING, RUNNING, STOPPED, UNKNOWN, WAITING

STALE_MIN_S = 300.0
STALE_STEP_FACTOR = 20.0
FIRST_STEP_GRACE_S = 900.0
DEFAULT_WINDOW = 20  # logged steps in the moving average and in the step-time median


# ------------------------------------------------------------------------------------------- statistics
def step_times(lines: Sequence[dict[str, Any]]) -> list[float]:
    """Seconds per optimizer step between consecutive logged steps of the same process.

    A ``start`` event begins a new process: the gap across a restart, and the warm-up before a process's first
    logged step, are not step times.
    """
    out: list[float] = []
    prev: dict[str, Any] | None = None
    for rec in lines:
        if rec.get("event") == "start":
            prev = None
            continue
        if "loss" not in rec or not isinstance(rec.get("time"), (int, float)):
            continue
        if prev is not None and rec["step"] > prev["step"]:
            out.append((rec["time"] - prev["time"]) / (rec["step"] - prev["step"]))
        prev = rec
    return out


def training_elapsed(lines: Sequence[dict[str, Any]], now: float | None) -> float | None:
    """Seconds of training: for each process (from its ``start`` event to its last line) summed; the current
    process runs until ``now`` when given (a live run), else until its last line. Time between a crash and
    the resume is not counted."""
    total, seg_start, seg_end, seen = 0.0, None, None, False
    for rec in lines:
        t = rec.get("time")
        if not isinstance(t, (int, float)):
            continue
        if rec.get("event") == "start":
            if seg_start is not None and seg_end is not None:
                total += seg_end - seg_start
            seg_start, seg_end, seen = t, t, True
        elif seg_start is None:
            seg_start, seg_end, seen = t, t, True
        else:
            seg_end = t
    if not seen:
        return None
    end = now if now is not None else seg_end
    return total + max(0.0, end - seg_start)


def moving_average(values: Sequence[float], window: int) -> float | None:
    """Mean of the last ``window`` finite values (None when there are none)."""
    tail = [v for v in values[-window:] if math.isfinite(v)]
    return sum(tail) / len(tail) if tail else None


def _last_time(log: RunLog) -> float | None:
    times = [r["time"] for r in log.lines if isinstance(r.get("time"), (int, float))]
    if times:
        return max(times)
    for path in (log.output_dir / RUN_FILE, log.source_path):
        if path is not None and path.is_file():
            return path.stat().st_mtime
    return None


def process_alive(pid: int, started_by: float | None = None, hostname: str | None = None) -> bool | None:
    """Whether the training process ``pid`` still runs on this machine.

    ``None`` when it cannot be told: the run's ``hostname`` (when recorded) is another machine, or psutil is
    unavailable. A process created after ``started_by`` (the run's last start) is a reused pid: not alive.
    """
    if hostname and hostname != socket.gethostname():
        return None
    try:
        import psutil
    except ImportError:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists, but belongs to someone we may not inspect
    return not (started_by is not None and created > started_by + 1.0)


# --------------------------------------------------------------------------------------------- snapshot
@dataclass
class Snapshot:
    """One look at a run: its state, progress, latest metrics and histories. JSON-serialisable."""

    output_dir: str
    state: str
    message: str
    checked_at: float
    source: str = "none"
    source_file: str | None = None
    step: int | None = None
    max_steps: int | None = None
    percent: float | None = None
    epoch: float | None = None
    num_train_epochs: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    step_time_s: float | None = None
    step_time_samples: int = 0
    loss: float | None = None
    loss_avg: float | None = None
    window: int = DEFAULT_WINDOW
    learning_rate: float | None = None
    grad_norm: float | None = None
    eval_loss: float | None = None
    eval_step: int | None = None
    eval_records: str | None = (
        None  # what the eval loss is on (converted records, not an evaluation's headline)
    )
    generation: dict[str, Any] | None = None  # the last generation metrics: step, records, gen_all_* values
    samples_per_s: float | None = None
    tokens_per_s: float | None = None
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    gpu_mem_mb: float | None = None
    gpu_peak_mb: float | None = None
    start_time: str | None = None
    end_time: str | None = None
    last_record_time: float | None = None
    last_record_age_s: float | None = None
    resumed_at_step: int | None = None
    pid: int | None = None
    pid_alive: bool | None = None
    latest_checkpoint: str | None = None  # the newest complete one: what auto resume takes
    incomplete_checkpoints: list[str] = field(default_factory=list)  # newer ones without their marker
    final_train_loss: float | None = None
    non_finite_steps: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    learning_rates: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)

    def to_json(self) -> str:
        """The snapshot as one JSON object (NaN and infinite losses are written as strings)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return str(v)
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        return json.dumps(clean(asdict(self)), indent=2)


def fmt_duration(seconds: float | None) -> str:
    """``45s``, ``3m 05s``, ``2h 07m``, ``1d 04h``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def fmt_clock(t: float | None) -> str:
    """Local wall-clock time of an epoch timestamp."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t is not None else "?"


def _fill_metrics(snap: Snapshot, log: RunLog, window: int) -> None:
    steps = log.steps
    last = steps[-1] if steps else None
    snap.losses = [(int(r["step"]), float(r["loss"])) for r in steps if numeric_field(r, "loss") is not None]
    snap.learning_rates = [
        (int(r["step"]), float(r["learning_rate"]))
        for r in steps
        if numeric_field(r, "learning_rate") is not None
    ]
    snap.eval_losses = [
        (int(r.get("step", 0)), float(r["eval_loss"]))
        for r in log.evals
        if numeric_field(r, "eval_loss") is not None
    ]
    snap.non_finite_steps = [s for s, v in snap.losses if not math.isfinite(v)]
    snap.loss = numeric_field(last, "loss")
    snap.loss_avg = moving_average([v for _, v in snap.losses], window)
    for key in (
        "learning_rate",
        "grad_norm",
        "samples_per_s",
        "tokens_per_s",
        "rss_mb",
        "peak_rss_mb",
        "gpu_mem_mb",
        "gpu_peak_mb",
        "epoch",
    ):
        setattr(snap, key, numeric_field(last, key))
    if snap.eval_losses:
        snap.eval_step, snap.eval_loss = snap.eval_losses[-1]
    named = log.run.get("evaluation_records") or {}
    last_eval = log.evals[-1] if log.evals else {}
    snap.eval_records = last_eval.get("eval_records") or (named.get("eval") or {}).get("text")
    generation = [r for r in log.lines if any(k.startswith(GENERATION_PREFIX + "all_") for k in r)]
    if generation:
        g = generation[-1]
        snap.generation = {
            "step": g.get("step"),
            "records": g.get("gen_records") or (named.get("generation") or {}).get("text"),
            "values": {
                k.removeprefix(GENERATION_PREFIX): v
                for k, v in g.items()
                if k.startswith(GENERATION_PREFIX + "all_") and numeric_field(g, k) is not None
            },
        }
    summary = [r for r in log.lines if "train_loss" in r]
    snap.final_train_loss = numeric_field(summary[-1], "train_loss") if summary else None


def _fill_progress(snap: Snapshot, log: RunLog, window: int, live: bool) -> None:
    steps = log.steps
    max_steps = log.run.get("max_steps")
    if not isinstance(max_steps, int) or max_steps <= 0:
        max_steps = next(
            (r["max_steps"] for r in reversed(log.lines) if isinstance(r.get("max_steps"), int)), None
        )
    snap.max_steps = max_steps if isinstance(max_steps, int) and max_steps > 0 else None
    snap.step = int(steps[-1]["step"]) if steps else None
    if snap.step is not None and snap.max_steps:
        snap.percent = 100.0 * snap.step / snap.max_steps
    recent = step_times(log.lines)[-window:]
    snap.step_time_s = statistics.median(recent) if recent else None
    snap.step_time_samples = len(recent)
    if snap.step_time_s is not None and snap.step is not None and snap.max_steps:
        snap.eta_s = max(0, snap.max_steps - snap.step) * snap.step_time_s
    snap.elapsed_s = training_elapsed(log.lines, snap.checked_at if live else None)


def _stale_threshold(step_time: float | None) -> float:
    if step_time is None:
        return FIRST_STEP_GRACE_S
    return max(STALE_MIN_S, STALE_STEP_FACTOR * step_time)


def run_status(log: RunLog) -> str | None:
    """What the run's own records say: ``RUNNING``, ``FINISHED`` or ``STOPPED`` from ``run.json``, else from the
    last start / finished / stopped event, else ``RUNNING`` when ``train_log.jsonl`` has lines; None when nothing
    says (not started yet, or a ``trainer_state.json`` fallback). Whether a running run is alive is
    :func:`take_snapshot`'s call."""
    status = log.run.get("status")
    if status in (RUNNING, FINISHED, STOPPED):
        return status
    events = [e["event"] for e in log.events if e.get("event") in ("start", FINISHED, STOPPED)]
    if events:
        return RUNNING if events[-1] == "start" else events[-1]
    return RUNNING if log.lines and log.source == "jsonl" else None


def _where(snap: Snapshot) -> str:
    step = f"step {snap.step}/{snap.max_steps or '?'}" if snap.step is not None else "before the first step"
    return (
        f"{step}, last record {fmt_duration(snap.last_record_age_s)} ago ({fmt_clock(snap.last_record_time)})"
    )


def _skipped(snap: Snapshot) -> str:
    if not snap.incomplete_checkpoints:
        return ""
    return f"; incomplete, skipped by auto resume: {', '.join(snap.incomplete_checkpoints)}"


def _crash_reason(snap: Snapshot) -> str | None:
    """Why a run that says 'running' looks stopped, or None when it looks alive."""
    resume = "Resume with --resume_from_checkpoint auto"
    resume += (
        f" (latest complete checkpoint: {snap.latest_checkpoint}{_skipped(snap)})."
        if snap.latest_checkpoint
        else f" (no complete checkpoint saved yet{_skipped(snap)})."
    )
    console = "The error, if any, is in the console output of the training command."
    if snap.pid_alive is False:
        return (
            f"Looks stopped: run.json still says 'running', but the training process (pid {snap.pid}) is no "
            f"longer running on this machine; {_where(snap)}. {console} {resume}"
        )
    threshold = _stale_threshold(snap.step_time_s)
    if snap.last_record_age_s is not None and snap.last_record_age_s > threshold:
        expected = f"one every ~{fmt_duration(snap.step_time_s)}" if snap.step_time_s else "a first step"
        alive = f"; pid {snap.pid} still exists: hung? check GPU utilisation" if snap.pid_alive else ""
        return (
            f"Looks stopped: no new record for {fmt_duration(snap.last_record_age_s)} (expected {expected}, "
            f"alarm after {fmt_duration(threshold)}) although run.json says 'running'{alive}; {_where(snap)}. "
            f"{console} {resume}"
        )
    return None


def _state_message(snap: Snapshot, status: str | None) -> tuple[str, str]:
    if status is None:
        if snap.source == "trainer_state":
            return UNKNOWN, (
                f"No {RUN_FILE}: progress read from {snap.source_file}, which the "
                "Trainer updates only when it saves a checkpoint; whether training still runs cannot be told."
            )
        return (
            WAITING,
            "No record yet: waiting for training to start (data checks and model loading come first).",
        )
    if status == FINISHED:
        loss = f"; final loss {snap.loss:.4f}" if snap.loss is not None else ""
        return (
            FINISHED,
            f"Finished at step {snap.step}/{snap.max_steps}{loss} ({snap.end_time or fmt_clock(snap.last_record_time)}).",
        )
    if status == STOPPED:
        return STOPPED, (
            f"Stopped on request at step {snap.step}/{snap.max_steps} ({snap.end_time or '?'}); a checkpoint was "
            "saved. Continue with --resume_from_checkpoint auto."
        )
    crash = _crash_reason(snap)
    if crash:
        return CRASHED, crash
    if snap.step is None:
        return WAITING, (
            f"Training started {fmt_duration(snap.last_record_age_s)} ago; waiting for the first logged step."
        )
    return RUNNING, f"Running: step {snap.step}/{snap.max_steps or '?'}."


def take_snapshot(
    output_dir: str | os.PathLike[str],
    now: float | None = None,
    window: int = DEFAULT_WINDOW,
    pid_check: bool = True,
) -> Snapshot:
    """Read the run folder and say where the run stands (``now`` is injectable for tests)."""
    now = time.time() if now is None else now
    out = Path(output_dir)
    snap = Snapshot(output_dir=str(out), state=MISSING, message="", checked_at=now, window=window)
    if not out.is_dir():
        snap.message = f"Run folder {out} does not exist (yet)."
        return snap
    log = read_run_log(out)
    snap.source = log.source
    snap.source_file = str(log.source_path) if log.source_path else None
    ckpt = latest_checkpoint(out)
    snap.latest_checkpoint = ckpt.name if ckpt else None
    snap.incomplete_checkpoints = [p.name for p in incomplete_checkpoints(out)]
    status = run_status(log)
    _fill_metrics(snap, log, window)
    _fill_progress(snap, log, window, live=status == RUNNING)
    snap.last_record_time = _last_time(log)
    snap.last_record_age_s = now - snap.last_record_time if snap.last_record_time is not None else None
    snap.start_time = log.run.get("start_time")
    snap.end_time = log.run.get("end_time")
    resumed = log.run.get("resumed_at_step")
    snap.resumed_at_step = resumed if isinstance(resumed, int) and resumed > 0 else None
    training_args = (log.run.get("args") or {}).get("training") or {}
    if not (isinstance(training_args.get("max_steps"), int) and training_args["max_steps"] > 0):
        snap.num_train_epochs = numeric_field(
            log.run, "num_train_epochs"
        )  # else max_steps, not epochs, ends the run
    pid = log.run.get("pid")
    snap.pid = pid if isinstance(pid, int) else None
    if status == RUNNING and snap.pid is not None and pid_check:
        starts = [
            e["time"]
            for e in log.events
            if e.get("event") == "start" and isinstance(e.get("time"), (int, float))
        ]
        snap.pid_alive = process_alive(snap.pid, starts[-1] if starts else None, log.run.get("hostname"))
    snap.state, snap.message = _state_message(snap, status)
    if snap.state == CRASHED:  # the clock stopped at the last record
        snap.elapsed_s = training_elapsed(log.lines, None)
    snap.warnings = _warnings(snap, log)
    return snap


def _warnings(snap: Snapshot, log: RunLog) -> list[str]:
    out = []
    if snap.non_finite_steps:
        shown = ", ".join(map(str, snap.non_finite_steps[:10]))
        out.append(
            f"loss is NaN or infinite at {len(snap.non_finite_steps)} step(s): {shown}. Lower the learning rate, "
            "use bf16 rather than fp16, lower --max_grad_norm, and check the data with scripts/test_data_loading.py."
        )
    if log.earlier_lines:
        out.append(
            f"{log.earlier_lines} line(s) of {TRAIN_LOG_JSONL} before the latest fresh start belong to an earlier "
            "run in this folder; left out."
        )
    if log.bad_lines:
        out.append(
            f"{len(log.bad_lines)} line(s) of {TRAIN_LOG_JSONL} are not JSON (lines {log.bad_lines[:5]}); skipped."
        )
    if snap.incomplete_checkpoints:
        being_written = snap.state == RUNNING and len(snap.incomplete_checkpoints) == 1
        names = ", ".join(snap.incomplete_checkpoints)
        out.append(
            f"{names}: being written (no completion marker yet)"
            if being_written
            else f"{names}: incomplete (no completion marker: the save was cut off); --resume_from_checkpoint "
            f"auto skips it and takes {snap.latest_checkpoint or 'none (fresh start)'}."
        )
    if log.output_dir.is_dir() and not (log.output_dir / RUN_FILE).is_file() and log.source == "jsonl":
        out.append(f"{RUN_FILE} is missing: total steps and status come from {TRAIN_LOG_JSONL} alone.")
    return out
