"""The seven FLARE25 task types as a table: ``TASKS[name]`` is the :class:`TaskType` that knows how to turn a
raw answer into a training target, read a model answer, write it back in challenge form, score it, and how
many tokens an answer may take.

    from qwenvl.flare.tasks import task_for
    task = task_for("Detection")              # raw or normalised spelling
    task.parse("[[1, 2, 3, 4]]")              # [[1.0, 2.0, 3.0, 4.0]]
    task.main_metric, task.max_new_tokens     # ("f1", 256)

Adding a task type: one module here defining a :class:`TaskType` subclass and ``TASK``, listed in
``_MODULES``; its tests; a demo builder in ``data_conversion/demo_tree/builders.py``. Nothing else in the toolkit
branches on task-type names.
"""

from __future__ import annotations

import re
from typing import Any

from qwenvl.flare.tasks import (
    classification,
    counting,
    detection,
    instance_detection,
    multi_label,
    regression,
    report_generation,
)
from qwenvl.flare.tasks.base import TaskType

# Table order: the order tables and reports list task types in.
_MODULES = (
    classification,
    multi_label,
    detection,
    instance_detection,
    counting,
    regression,
    report_generation,
)
TASKS: dict[str, TaskType] = {m.TASK.name: m.TASK for m in _MODULES}
TASK_TYPES: tuple[str, ...] = tuple(TASKS)

# The names, for the dataset table and for tests.
CLASSIFICATION = classification.TASK.name
MULTI_LABEL = multi_label.TASK.name
DETECTION = detection.TASK.name
INSTANCE_DETECTION = instance_detection.TASK.name
COUNTING = counting.TASK.name
REGRESSION = regression.TASK.name
REPORT_GENERATION = report_generation.TASK.name

_TASK_KEYS = {re.sub(r"[\s_\-]+", "", t): t for t in TASK_TYPES}


def normalize_task_type(raw: object) -> str | None:
    """Map a raw ``TaskType`` (``Multi-label Classification``, ``Report_Generation``...) to its normalised
    name, or ``None`` when it is not one of the seven FLARE25 task types."""
    if not isinstance(raw, str):
        return None
    return _TASK_KEYS.get(re.sub(r"[\s_\-]+", "", raw.strip().lower()))


def task_for(task_type: object) -> TaskType:
    """The task type for a raw or normalised name; ``ValueError`` naming the valid ones otherwise."""
    name = normalize_task_type(task_type)
    if name is None:
        raise ValueError(
            f"unknown task type {task_type!r}; expected one of the seven FLARE25 task types: "
            + ", ".join(TASK_TYPES)
        )
    return TASKS[name]


def parse_answer(answer: object, task_type: str, question: str | None = None) -> Any:
    """Read a model answer for ``task_type`` (raw or normalised name); ``None`` = unparsable. ``question``
    supplies the options of option tasks."""
    return task_for(task_type).parse(answer, question)


__all__ = [
    "CLASSIFICATION",
    "COUNTING",
    "DETECTION",
    "INSTANCE_DETECTION",
    "MULTI_LABEL",
    "REGRESSION",
    "REPORT_GENERATION",
    "TASKS",
    "TASK_TYPES",
    "TaskType",
    "normalize_task_type",
    "parse_answer",
    "task_for",
]
