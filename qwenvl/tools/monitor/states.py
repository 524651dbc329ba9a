"""The states a watched run can be in: what :func:`~qwenvl.tools.monitor.snapshot.take_snapshot` decides, and
what the dashboard, the plot title and the CLI's exit status show.

``RUNNING``, ``FINISHED`` and ``STOPPED`` are also the ``status`` values the trainer records in ``run.json``
(``qwenvl/train/callbacks.py``); the others are the monitor's own conclusions.
"""

from __future__ import annotations

MISSING = "missing"  # the output folder does not exist (yet)
WAITING = "waiting"  # the folder exists, no logged step yet
RUNNING = "running"
FINISHED = "finished"  # reached max_steps
STOPPED = "stopped"  # stopped on request (SIGTERM / Ctrl-C), checkpoint saved
CRASHED = "crashed"  # says running, but the process is gone or silent for far too long
UNKNOWN = "unknown"  # no run.json (not started by train_qwen.py): progress from trainer_state.json only
