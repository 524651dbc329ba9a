"""Watch a training run from the files it writes into its output folder (``scripts/monitor_training.py``).

The training entry point (``qwenvl/train/train_qwen.py``, through ``RunRecordCallback``) writes, on rank 0:

* ``run.json`` - ``status`` (running / finished / stopped), ``max_steps``, ``start_time``, ``resumed_at_step``,
  ``pid``, the arguments;
* ``train_log.jsonl`` - one JSON object per logging step (``step``, ``time``, ``loss``, ``learning_rate``,
  ``grad_norm``, ``samples_per_s``, memory...), per evaluation (``eval_loss``) and per event
  (``{"event": "start" | "finished" | "stopped"}``);
* ``train.log`` - the same, one human-readable line each.

(The names come from :mod:`qwenvl.flare.runfiles`, shared with the trainer.) From these the monitor tells:
progress and ETA, current and averaged loss, learning rate, grad norm, eval loss, throughput, a loss history
chart, the machine's GPUs (NVML) or CPU and RAM, and the run's state: not started, waiting for its first step,
running, finished, stopped on request, resumed, or *looks stopped* (the file still says running but the process
is gone or nothing was logged for far longer than a step takes). Runs written by other code fall back on the
Trainer's ``trainer_state.json`` (updated only when a checkpoint is saved).

The modules, data flowing one way (each imports only those above it):

* :mod:`.states` - the run states;
* :mod:`.runfolder` - reading the run folder as it is on disk (:func:`read_run_log`, :func:`tail_lines`);
* :mod:`.snapshot` - deciding where the run stands (:func:`take_snapshot` -> :class:`Snapshot`);
* :mod:`.system` - this machine's GPUs, CPU and RAM (:func:`system_stats`);
* :mod:`.render` - the text dashboard (:func:`format_snapshot`);
* :mod:`.plot` - the loss chart PNG (:func:`write_plot`);
* :mod:`.cli` - argument parsing, ``--once`` / live / ``--tail`` (:func:`main`).

Nothing here imports torch or transformers, so the monitor starts in a second beside a busy training job.
"""

from __future__ import annotations

from qwenvl.flare.runfiles import RUN_FILE, TRAIN_LOG_JSONL, TRAIN_LOG_TEXT
from qwenvl.tools.monitor.cli import (
    DEFAULT_REFRESH_S,
    EXIT_CRASHED,
    EXIT_MISSING,
    EXIT_OK,
    build_parser,
    main,
    print_tail,
    snapshot_once,
    watch,
)
from qwenvl.tools.monitor.cli import _render as _render  # one live frame as text; tests check its wording
from qwenvl.tools.monitor.plot import write_plot
from qwenvl.tools.monitor.render import CHART_WIDTH, format_snapshot, progress_bar, sparkline
from qwenvl.tools.monitor.runfolder import (
    TRAINER_STATE,
    RunLog,
    current_run,
    incomplete_checkpoints,
    latest_checkpoint,
    read_run_log,
    tail_lines,
)
from qwenvl.tools.monitor.snapshot import (
    DEFAULT_WINDOW,
    FIRST_STEP_GRACE_S,
    STALE_MIN_S,
    STALE_STEP_FACTOR,
    Snapshot,
    fmt_clock,
    fmt_duration,
    moving_average,
    process_alive,
    step_times,
    take_snapshot,
    training_elapsed,
)
from qwenvl.tools.monitor.states import CRASHED, FINISHED, MISSING, RUNNING, STOPPED, UNKNOWN, WAITING
from qwenvl.tools.monitor.system import GpuStat, SystemStats, gpu_stats, system_stats

__all__ = [
    "CHART_WIDTH",
    "CRASHED",
    "DEFAULT_REFRESH_S",
    "DEFAULT_WINDOW",
    "EXIT_CRASHED",
    "EXIT_MISSING",
    "EXIT_OK",
    "FINISHED",
    "FIRST_STEP_GRACE_S",
    "MISSING",
    "RUNNING",
    "RUN_FILE",
    "STALE_MIN_S",
    "STALE_STEP_FACTOR",
    "STOPPED",
    "TRAINER_STATE",
    "TRAIN_LOG_JSONL",
    "TRAIN_LOG_TEXT",
    "UNKNOWN",
    "WAITING",
    "GpuStat",
    "RunLog",
    "Snapshot",
    "SystemStats",
    "build_parser",
    "current_run",
    "fmt_clock",
    "fmt_duration",
    "format_snapshot",
    "gpu_stats",
    "incomplete_checkpoints",
    "latest_checkpoint",
    "main",
    "moving_average",
    "print_tail",
    "process_alive",
    "progress_bar",
    "read_run_log",
    "snapshot_once",
    "sparkline",
    "step_times",
    "system_stats",
    "tail_lines",
    "take_snapshot",
    "training_elapsed",
    "watch",
    "write_plot",
]
