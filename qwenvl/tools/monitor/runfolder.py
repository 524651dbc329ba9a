"""Reading a run folder: ``run.json``, ``train_log.jsonl`` (or the Trainer's ``trainer_state.json``), the
checkpoints and the text log, exactly as they are on disk; no judgement about the run's state.

The files may be written while they are read: a torn last line of ``train_log.jsonl`` is skipped silently,
any other line that is not a JSON object is counted in :attr:`RunLog.bad_lines`. An unreadable or absent file
reads as empty, never raises.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwenvl.flare.runfiles import (
    RUN_FILE,
    TRAIN_LOG_JSONL,
    checkpoint_folders,
    newest_complete_checkpoint,
)
from qwenvl.tools.monitor.states import FINISHED

# Written by the Hugging Face Trainer into each checkpoint (and into the output folder when training ends);
# read only for runs that have no train_log.jsonl.
TRAINER_STATE = "trainer_state.json"


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


def numeric_field(rec: dict[str, Any] | None, key: str) -> float | None:
    """``rec[key]`` as a float when it is a number (not a bool); None when absent, not a number, or no ``rec``."""
    v = rec.get(key) if rec else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


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
    """The newest complete ``checkpoint-N`` folder (the one ``--resume_from_checkpoint auto`` takes), if any."""
    return newest_complete_checkpoint(output_dir)[0]


def incomplete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoint folders newer than the latest complete one and without its marker (a save in progress, or
    one cut off by a killed process), newest first: ``auto`` resume skips them."""
    return newest_complete_checkpoint(output_dir)[1]


def _trainer_state_log(output_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], Path] | None:
    """``log_history`` of the newest ``trainer_state.json`` (output folder, else the newest checkpoint folder,
    complete or not: a run without ``run.json`` was not started here and its checkpoints have no marker)."""
    folders = checkpoint_folders(output_dir)
    ckpt = folders[-1][1] if folders else None
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
