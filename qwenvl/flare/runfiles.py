"""The names of the files a run folder holds, for the trainer that writes them and the tools that read them.

A training run's ``output_dir``::

    run.json               live record: pid, host, start time, total steps, status (rank 0)
    train_log.jsonl        one JSON object per logging step (loss, learning rate per group, throughput...)
    train.log              the same steps as text lines, for ``tail -f``
    dataset_report.json    per dataset: records, samples dropped before training and why
    run_info.json          resolved arguments, dataset mix, seed, versions, git commit (in every checkpoint too)
    checkpoint-N/          a self-contained checkpoint; complete once its checkpoint_complete.json exists

An evaluation's ``output_dir`` holds the ``EVAL_*`` files below.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
TRAIN_LOG_JSONL = "train_log.jsonl"
TRAIN_LOG_TEXT = "train.log"
DATASET_REPORT = "dataset_report.json"
RUN_INFO = "run_info.json"
GENERATION_EVAL_DIR = "generation_eval"
GENERATION_PREFIX = (
    "gen_"  # the log keys of the generation metrics during training (gen_all_<task>_<metric>...)
)

EVAL_PREDICTIONS = "predictions.json"
EVAL_RAW_OUTPUTS = "raw_outputs.jsonl"
EVAL_SUMMARY = "summary.json"
EVAL_METRICS_JSON = "metrics.json"
EVAL_METRICS_MD = "metrics.md"
EVAL_METRICS_PNG = "metrics.png"
EVAL_REPORT_HTML = "report.html"

CHECKPOINT_COMPLETE = "checkpoint_complete.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def is_complete_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` holds a whole checkpoint: its marker is written last, after every rank's files."""
    return (Path(folder) / CHECKPOINT_COMPLETE).is_file()


def checkpoint_folders(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-N`` folder in ``output_dir``, oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    return sorted((int(m[1]), p) for p in out.iterdir() if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name)))


def newest_complete_checkpoint(output_dir: str | Path) -> tuple[Path | None, list[Path]]:
    """``(the newest complete checkpoint or None, the incomplete ones newer than it, newest first)``: the
    checkpoint ``--resume_from_checkpoint auto`` takes and the ones it skips (e.g. from a process killed in
    the middle of a save). The training recipe and the monitor both use this one rule."""
    skipped: list[Path] = []
    for _step, folder in reversed(checkpoint_folders(output_dir)):
        if is_complete_checkpoint(folder):
            return folder, skipped
        skipped.append(folder)
    return None, skipped


def read_run_info(folder: str | Path) -> dict[str, Any]:
    """The ``run_info.json`` of a run or checkpoint folder as a dict; ``{}`` when there is none (a base model,
    a hub id) or it cannot be read (with a warning naming the file). Every tool that takes a checkpoint reads
    what training recorded through this one function."""
    path = Path(folder).expanduser() / RUN_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning(
            "%s is not readable (%s); using the defaults instead of what training recorded", path, exc
        )
        return {}
    if not isinstance(info, dict):
        log.warning("%s holds a JSON %s, not an object; ignored", path, type(info).__name__)
        return {}
    return info
