"""Watch a training run from the files it writes into its output folder.

The training entry point (``qwenvl/train/train_qwen.py``, through ``RunRecordCallback``) writes, on rank 0:

* ``run.json`` - ``status`` (running / finished / stopped), ``max_steps``, ``start_time``, ``resumed_at_step``,
  ``pid``, the arguments;
* ``train_log.jsonl`` - one JSON object per logging step (``step``, ``time``, ``loss``, ``learning_rate``,
  ``grad_norm``, ``samples_per_s``, memory...), per evaluation (``eval_loss``) and per event
  (``{"event": "start" | "finished" | "stopped"}``);
* ``train.log`` - the same, one human-readable line each.

From these the monitor tells: progress and ETA, current and averaged loss, learning rate, grad norm, eval loss,
throughput, a loss history chart, the machine's GPUs (NVML) or CPU and RAM, and the run's state: not started,
waiting for its first step, running, finished, stopped on request, resumed, or *looks stopped* (the file still
says running but the process is gone or nothing was logged for far longer than a step takes). Runs written by
other code fall back on the Trainer's ``trainer_state.json`` (updated only when a checkpoint is saved).

Nothing here imports torch or transformers, so the monitor starts in a second beside a busy training job.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# File names written by qwenvl/train/callbacks.py (kept in step by tests/test_monitor.py; not imported from
# there because that module pulls in transformers).
RUN_FILE = "run.json"
TRAIN_LOG_JSONL = "train_log.jsonl"
TRAIN_LOG_TEXT = "train.log"
TRAINER_STATE = "trainer_state.json"

# Run states.
MISSING = "missing"  # the output folder does not exist (yet)
WAITING = "waiting"  # the folder exists, no logged step yet
RUNNING = "running"
FINISHED = "finished"  # reached max_steps
STOPPED = "stopped"  # stopped on request (SIGTERM / Ctrl-C), checkpoint saved
CRASHED = "crashed"  # says running, but the process is gone or silent for far too long
UNKNOWN = "unknown"  # no run.json (not started by train_qwen.py): progress from trainer_state.json only

# A running run "looks stopped" when its last record is older than max(STALE_MIN_S, STALE_STEP_FACTOR x the
# median step time), or, before the first step has a time, older than FIRST_STEP_GRACE_S.
STALE_MIN_S = 300.0
STALE_STEP_FACTOR = 20.0
FIRST_STEP_GRACE_S = 900.0
DEFAULT_WINDOW = 20  # logged steps in the moving average and in the step-time median
DEFAULT_REFRESH_S = 10.0
CHART_WIDTH = 60
SPARK_CHARS = "▁▂▃▄▅▆▇█"
NON_FINITE_MARK = "×"
RULE = "=" * 80

EXIT_OK = 0
EXIT_MISSING = 1
EXIT_CRASHED = 2

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# --------------------------------------------------------------------------------------------- reading
@dataclass
class RunLog:
    """What a run folder holds: ``run.json`` and every parsed line of ``train_log.jsonl``, in file order."""

    output_dir: Path
    run: dict[str, Any] = field(default_factory=dict)
    lines: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)  # 1-based numbers of lines that are not JSON objects
    earlier_lines: int = 0  # lines of an earlier run in the same folder, left out
    source: str = "none"  # "jsonl", "trainer_state" (fallback) or "none"
    source_path: Path | None = None

    @property
    def steps(self) -> list[dict[str, Any]]:
        """Training log lines: those with a ``loss``."""
        return [r for r in self.lines if "loss" in r and "step" in r]

    @property
    def evals(self) -> list[dict[str, Any]]:
        """Evaluation lines: those with an ``eval_loss``."""
        return [r for r in self.lines if "eval_loss" in r]

    @property
    def events(self) -> list[dict[str, Any]]:
        """``{"event": "start" | "finished" | "stopped", "step", "time"}`` lines."""
        return [r for r in self.lines if "event" in r]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Parsed objects and the numbers of unparsable lines, except a torn last line (being written right now)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return [], []
    raw = text.split("\n")
    torn_last = not text.endswith("\n")
    lines, bad = [], []
    for number, line in enumerate(raw, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            lines.append(obj)
        elif not (torn_last and number == len(raw)):
            bad.append(number)
    return lines, bad


def current_run(lines: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The lines of the latest run in the folder, and how many earlier lines were left out.

    A ``start`` event at step 0 after other lines means training was started afresh in the same folder (the
    callback appends): the earlier lines belong to the previous run. A start at step N > 0 is a resume: lines
    of steps after N written before it (the callback normally truncates them) are dropped too.
    """
    kept: list[dict[str, Any]] = []
    dropped = 0
    for rec in lines:
        if rec.get("event") == "start" and kept:
            resumed_at = rec.get("step", 0) if isinstance(rec.get("step"), int) else 0
            before = len(kept)
            kept = [] if resumed_at == 0 else [r for r in kept if r.get("step", 0) <= resumed_at]
            dropped += before - len(kept)
        kept.append(rec)
    return kept, dropped


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The ``checkpoint-N`` folder with the largest N, if any."""
    if not output_dir.is_dir():
        return None
    found = [
        (int(m[1]), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))
    ]
    return max(found)[1] if found else None


def _trainer_state_log(output_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], Path] | None:
    """``log_history`` of the newest ``trainer_state.json`` (output folder, else latest checkpoint)."""
    ckpt = latest_checkpoint(output_dir)
    candidates = [output_dir / TRAINER_STATE] + ([ckpt / TRAINER_STATE] if ckpt else [])
    states = [(p, _read_json(p)) for p in candidates if p.is_file()]
    states = [(p, s) for p, s in states if isinstance(s, dict)]
    if not states:
        return None
    path, state = max(states, key=lambda ps: ps[1].get("global_step", 0))
    history = [dict(r) for r in state.get("log_history", []) if isinstance(r, dict)]
    return state, history, path


def read_run_log(output_dir: str | os.PathLike[str]) -> RunLog:
    """Read a run folder; a folder without ``train_log.jsonl`` falls back on ``trainer_state.json``."""
    out = Path(output_dir)
    log = RunLog(out)
    run = _read_json(out / RUN_FILE)
    log.run = run if isinstance(run, dict) else {}
    jsonl = out / TRAIN_LOG_JSONL
    if jsonl.is_file():
        lines, log.bad_lines = _read_jsonl(jsonl)
        log.lines, log.earlier_lines = current_run(lines)
        log.source, log.source_path = "jsonl", jsonl
        return log
    fallback = _trainer_state_log(out) if out.is_dir() else None
    if fallback:
        state, history, path = fallback
        log.lines = history
        log.source, log.source_path = "trainer_state", path
        log.run.setdefault("max_steps", state.get("max_steps"))
        # The Trainer writes trainer_state.json into the output folder itself only after training ends.
        if path.parent == out and state.get("global_step", 0) >= (state.get("max_steps") or math.inf):
            log.run.setdefault("status", FINISHED)
    return log


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
    latest_checkpoint: str | None = None
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


def _num(rec: dict[str, Any] | None, key: str) -> float | None:
    v = rec.get(key) if rec else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


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
    snap.losses = [(int(r["step"]), float(r["loss"])) for r in steps if _num(r, "loss") is not None]
    snap.learning_rates = [
        (int(r["step"]), float(r["learning_rate"])) for r in steps if _num(r, "learning_rate") is not None
    ]
    snap.eval_losses = [
        (int(r.get("step", 0)), float(r["eval_loss"])) for r in log.evals if _num(r, "eval_loss") is not None
    ]
    snap.non_finite_steps = [s for s, v in snap.losses if not math.isfinite(v)]
    snap.loss = _num(last, "loss")
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
        setattr(snap, key, _num(last, key))
    if snap.eval_losses:
        snap.eval_step, snap.eval_loss = snap.eval_losses[-1]
    summary = [r for r in log.lines if "train_loss" in r]
    snap.final_train_loss = _num(summary[-1], "train_loss") if summary else None


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


def _status(log: RunLog) -> str | None:
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


def _crash_reason(snap: Snapshot) -> str | None:
    """Why a run that says 'running' looks stopped, or None when it looks alive."""
    resume = "Resume with --resume_from_checkpoint auto"
    resume += (
        f" (latest checkpoint: {snap.latest_checkpoint})."
        if snap.latest_checkpoint
        else " (no checkpoint saved yet)."
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
    status = _status(log)
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
        snap.num_train_epochs = _num(log.run, "num_train_epochs")  # else max_steps, not epochs, ends the run
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
    if log.output_dir.is_dir() and not (log.output_dir / RUN_FILE).is_file() and log.source == "jsonl":
        out.append(f"{RUN_FILE} is missing: total steps and status come from {TRAIN_LOG_JSONL} alone.")
    return out


# --------------------------------------------------------------------------------------------- system
@dataclass
class GpuStat:
    """One GPU as NVML reports it (a field is None when the device does not support it)."""

    index: int
    name: str
    util_percent: float | None
    mem_used_mb: float | None
    mem_total_mb: float | None
    temperature_c: float | None


@dataclass
class SystemStats:
    """This machine right now: GPUs via NVML (empty with ``gpu_note`` saying why), CPU and RAM via psutil."""

    gpus: list[GpuStat]
    gpu_note: str | None
    cpu_percent: float | None
    ram_used_mb: float | None
    ram_total_mb: float | None


def _nvml_field(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - NVMLError_NotSupported and friends: leave the field empty
        return None


def gpu_stats() -> tuple[list[GpuStat], str | None]:
    """Utilisation, memory and temperature of every GPU via NVML; ``([], reason)`` when NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - no driver, no library, no GPU: all mean "no GPU to show"
        return [], f"no NVIDIA GPU visible ({type(e).__name__})"
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = _nvml_field(lambda h=h: pynvml.nvmlDeviceGetName(h))
            name = name.decode() if isinstance(name, bytes) else str(name or "GPU")
            util = _nvml_field(lambda h=h: pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
            mem = _nvml_field(lambda h=h: pynvml.nvmlDeviceGetMemoryInfo(h))
            temp = _nvml_field(lambda h=h: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))
            gpus.append(
                GpuStat(
                    index=i,
                    name=name,
                    util_percent=float(util) if util is not None else None,
                    mem_used_mb=mem.used / 2**20 if mem is not None else None,
                    mem_total_mb=mem.total / 2**20 if mem is not None else None,
                    temperature_c=float(temp) if temp is not None else None,
                )
            )
        return gpus, None if gpus else "NVML reports no GPU"
    finally:
        _nvml_field(pynvml.nvmlShutdown)


def system_stats(cpu_interval: float = 0.1) -> SystemStats:
    """GPUs (NVML), CPU load and RAM (psutil) of the machine the monitor runs on."""
    gpus, note = gpu_stats()
    try:
        import psutil

        cpu = psutil.cpu_percent(interval=cpu_interval)
        vm = psutil.virtual_memory()
        ram_used, ram_total = (vm.total - vm.available) / 2**20, vm.total / 2**20
    except ImportError:
        cpu = ram_used = ram_total = None
    return SystemStats(gpus, note, cpu, ram_used, ram_total)


# --------------------------------------------------------------------------------------------- display
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
        lines.append(f"   Eval loss: {s.eval_loss:.4f} (step {s.eval_step})")
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


# ------------------------------------------------------------------------------------------------ plot
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
    grad = [(r["step"], r["grad_norm"]) for r in steps if _num(r, "grad_norm") is not None]
    fig = Figure(figsize=(10, 8 if grad else 6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(3 if grad else 2, 1, sharex=True)
    ax = axes[0]
    ax.plot(x, loss, lw=0.8, alpha=0.5, label="loss")
    ax.plot(x, _rolling(loss, window), lw=1.8, label=f"moving average ({window})")
    evals = [(r.get("step", 0), r["eval_loss"]) for r in log.evals if _num(r, "eval_loss") is not None]
    if evals:
        ax.plot(*zip(*evals), "o-", ms=4, label="eval loss")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    lr_keys = ["learning_rate"] + sorted({k for r in steps for k in r if k.startswith("lr_")})
    for key in lr_keys:
        pts = [(r["step"], r[key]) for r in steps if _num(r, key) is not None]
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
    status = _status(log) or "?"
    fig.suptitle(f"{Path(output_dir).resolve().name}: {status}, step {x[-1]}/{log.run.get('max_steps', '?')}")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


# ------------------------------------------------------------------------------------------------ tail
def tail_lines(path: str | os.PathLike[str], n: int) -> list[str]:
    """The last ``n`` lines of a text file, read from its end (the file may be large)."""
    if n <= 0:
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = pos = f.tell()
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            pos = max(0, pos - 65536)
            f.seek(pos)
            data = f.read(end - pos)
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:]


def print_tail(
    output_dir: Path, n: int, log_name: str = TRAIN_LOG_TEXT, out: Callable[[str], None] = print
) -> int:
    """Print the last ``n`` lines of the run's text log; exit status 1 when there is none."""
    path = output_dir / log_name
    if not path.is_file():
        others = sorted(p.name for p in output_dir.glob("*.log")) if output_dir.is_dir() else []
        hint = f" Other logs there: {', '.join(others)} (choose one with --log_file)." if others else ""
        where = "does not exist" if not output_dir.is_dir() else f"has no {log_name} yet"
        out(f"{output_dir} {where}.{hint}")
        return EXIT_MISSING
    lines = tail_lines(path, n)
    out(f"==> last {len(lines)} line(s) of {path} <==")
    for line in lines:
        out(line)
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ CLI
def _exit_status(snap: Snapshot) -> int:
    return {MISSING: EXIT_MISSING, CRASHED: EXIT_CRASHED}.get(snap.state, EXIT_OK)


def _plot(output_dir: Path, plot: Path | None, window: int) -> str | None:
    if plot is None:
        return None
    written = write_plot(output_dir, plot, window)
    return f"📈 Plot written to {written}" if written else f"📈 No plot yet ({plot}): no logged step"


def snapshot_once(
    output_dir: Path,
    window: int = DEFAULT_WINDOW,
    plot: Path | None = None,
    as_json: bool = False,
    pid_check: bool = True,
    out: Callable[[str], None] = print,
) -> int:
    """Print one snapshot (text or JSON); write the plot when asked. Exit status: 0, 1 (no folder), 2 (looks stopped)."""
    snap = take_snapshot(output_dir, window=window, pid_check=pid_check)
    if snap.state == MISSING:
        snap.message += " Check --output_dir, or start training first."
    if as_json:
        out(snap.to_json())
    else:
        out(format_snapshot(snap, system_stats()))
    note = _plot(output_dir, plot, window) if snap.state != MISSING else None
    if note:
        out(note)
    return _exit_status(snap)


def _render(output_dir: Path, refresh: float, window: int, plot: Path | None, pid_check: bool) -> str:
    snap = take_snapshot(output_dir, window=window, pid_check=pid_check)
    if snap.state == MISSING:
        snap.message += f" Waiting for it to appear (checking every {refresh:g} s)."
    text = format_snapshot(snap, system_stats())
    note = _plot(output_dir, plot, window) if snap.state != MISSING else None
    footer = f"refreshing every {refresh:g} s - Ctrl-C to quit (training is not affected)"
    return "\n".join(filter(None, [text, note, footer]))


def watch(
    output_dir: Path,
    refresh: float,
    window: int = DEFAULT_WINDOW,
    plot: Path | None = None,
    pid_check: bool = True,
) -> int:
    """Redraw the snapshot every ``refresh`` seconds until Ctrl-C (in place on a terminal, appended otherwise)."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()
    try:
        if console.is_terminal:
            with Live(console=console, auto_refresh=False, vertical_overflow="visible") as live:
                while True:
                    live.update(Text(_render(output_dir, refresh, window, plot, pid_check)), refresh=True)
                    time.sleep(refresh)
        while True:
            print(_render(output_dir, refresh, window, plot, pid_check), flush=True)
            time.sleep(refresh)
    except KeyboardInterrupt:
        print("\nMonitor stopped (Ctrl-C); the training run is not affected.")
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/monitor_training.py``."""
    p = argparse.ArgumentParser(
        prog="monitor_training.py",
        description="Watch a training run: progress, ETA, loss, learning rate, GPUs, state (running / finished / looks stopped).",
        epilog="Exit status with --once: 0 = running, waiting or finished; 1 = no such folder; 2 = looks stopped (crashed or hung).",
    )
    p.add_argument(
        "--output_dir",
        type=Path,
        required=True,
        help="The run's --output_dir (holds run.json, train_log.jsonl, train.log).",
    )
    p.add_argument(
        "--refresh", type=float, default=DEFAULT_REFRESH_S, help="Seconds between redraws (default 10)."
    )
    p.add_argument(
        "--tail",
        type=int,
        default=None,
        metavar="N",
        help="Print the last N lines of train.log and exit (with --once: after the snapshot).",
    )
    p.add_argument(
        "--log_file",
        default=TRAIN_LOG_TEXT,
        help="Log file in the run folder for --tail (default train.log).",
    )
    p.add_argument("--once", action="store_true", help="Print one snapshot and exit (for scripts and tests).")
    p.add_argument("--json", action="store_true", help="With --once: print the snapshot as JSON.")
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE.png",
        help="Write a PNG of loss, learning rate and grad norm over steps (rewritten at every refresh).",
    )
    p.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        help="Logged steps in the loss moving average and the step-time median (default 20).",
    )
    p.add_argument(
        "--no_pid_check",
        action="store_true",
        help="Do not judge liveness by the training pid (monitoring from another machine or container).",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/monitor_training.py``."""
    args = build_parser().parse_args(argv)
    if args.refresh <= 0 or args.window <= 0:
        print("error: --refresh and --window must be positive", file=sys.stderr)
        return 2
    pid_check = not args.no_pid_check
    if args.once:
        status = snapshot_once(args.output_dir, args.window, args.plot, args.json, pid_check)
        if args.tail:
            tail_status = print_tail(args.output_dir, args.tail, args.log_file)
            status = status or tail_status
        return status
    if args.tail is not None:
        return print_tail(args.output_dir, args.tail, args.log_file)
    return watch(args.output_dir, args.refresh, args.window, args.plot, pid_check)
