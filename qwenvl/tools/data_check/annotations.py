"""Annotation Tests: for every selected registered dataset, the file exists, is a JSON list of objects, and each
record has the converted-record structure of :func:`qwenvl.flare.schema.record_problems` (``image``, then
``conversations`` alternating human and gpt turns from a question to a non-empty answer, as many ``<image>`` tags
in the human turns as images, none in the answers).

Datasets checked by default: every registered entry whose ``split`` is ``train`` (a converted
``<dataset>_train.json``), plus entries registered through ``$QWENVL_EXTRA_DATASETS`` (no split) that are
``labelled``. Validation, hidden-validation and test files are not training data and are left out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwenvl.flare.paths import default_converted_dir
from qwenvl.flare.schema import (
    BAD_CONVERSATIONS,
    BAD_IMAGE_FIELD,
    EMPTY_ANSWER,
    MISSING_KEYS,
    NOT_AN_OBJECT,
    SHAPE_PROBLEMS,
    TAG_IN_ANSWER,
    TAG_MISMATCH,
    images_of,
    record_problems,
)
from qwenvl.tools.data_check.config import CONVERT_COMMAND, DataCheckConfig

# How to fix each kind of record problem (the kinds of qwenvl.flare.schema.record_problems).
ISSUE_FIXES = {
    NOT_AN_OBJECT: "each record must be a JSON object (qwenvl/flare/schema.py); re-run the converter",
    MISSING_KEYS: "each record needs 'image' and 'conversations' (qwenvl/flare/schema.py)",
    BAD_IMAGE_FIELD: "'image' must be a path or a list of paths",
    BAD_CONVERSATIONS: "'conversations' must list {'from': 'human' | 'gpt', 'value': text} turns alternating "
    "human, gpt, from the question to the answer",
    TAG_MISMATCH: "write one '<image>' in the human turn per image, in the order of 'image'; re-run the converter",
    TAG_IN_ANSWER: "'<image>' tags belong in the human turns; re-run the converter",
    EMPTY_ANSWER: "a training record needs its answer; inference inputs (val_hidden / test) are not training data",
}


@dataclass(frozen=True)
class RecordIssue:
    """A problem with one record (``index``) of an annotation file."""

    index: int
    kind: str
    detail: str


@dataclass
class DatasetAnnotations:
    """Annotation check of one registered dataset."""

    name: str
    path: str
    data_path: str = ""
    records: int = 0
    image_refs: int = 0
    file_error: str | None = None  # missing file, invalid JSON, not a list, unlabelled: nothing else checked
    issues: list[RecordIssue] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)  # resolved path -> first record index using it

    @property
    def passed(self) -> bool:
        return self.file_error is None and not self.issues


@dataclass
class AnnotationResult:
    """Annotation Tests: one entry per dataset, plus selection errors (unknown names, nothing registered)."""

    converted_dir: str
    datasets: list[DatasetAnnotations] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def total_records(self) -> int:
        return sum(d.records for d in self.datasets)

    @property
    def passed(self) -> bool:
        return bool(self.datasets) and not self.errors and all(d.passed for d in self.datasets)


def _is_training_entry(entry: dict) -> bool:
    if "split" in entry:
        return entry["split"] == "train"
    return bool(entry.get("labelled", True))


def resolve_check_datasets(
    names: Sequence[str] | None, converted_dir: Path | None
) -> tuple[list[tuple[str, dict]], list[str]]:
    """Registry entries to check, and errors for names that are not registered.

    ``names`` may hold registry names, ``name%NN`` (the rate is ignored: whole files are checked), comma-separated
    lists or paths to Qwen3-VL JSON files. ``converted_dir`` rebuilds the registry from that folder first.
    """
    import qwenvl.data as registry

    if converted_dir is not None:
        registry.refresh_registry(converted_dir)
    if not names:
        chosen = [(n, e) for n, e in registry.data_dict.items() if _is_training_entry(e)]
        return chosen, []
    chosen, errors = [], []
    try:
        parsed = registry.parse_dataset_use(",".join(names))
    except ValueError as e:
        return [], [str(e)]
    for name in (use.name for use in parsed):
        if name in registry.data_dict:
            chosen.append((name, registry.data_dict[name]))
        elif name.endswith(".json"):
            chosen.append(
                (
                    name,
                    {
                        "annotation_path": str(Path(name).expanduser().resolve()),
                        "data_path": "",
                        "labelled": True,
                    },
                )
            )
        else:
            try:
                registry.resolve_datasets(name)
            except (KeyError, ValueError) as e:
                errors.append(str(e.args[0]) if e.args else str(e))
    return chosen, errors


def check_annotation_record(rec: Any) -> list[tuple[str, str]]:
    """``(kind, detail)`` problems of one record of a training file (the kinds and rules of
    :func:`qwenvl.flare.schema.record_problems`, with images required and the record labelled); empty when it is
    fit for training. A record whose shape is wrong is reported once, by its first shape problem."""
    problems = record_problems(rec, labelled=True)
    if problems and problems[0][0] in SHAPE_PROBLEMS:
        return problems[:1]
    return problems


def check_annotation_file(name: str, entry: dict) -> DatasetAnnotations:
    """Annotation checks of one registered file: existence, JSON list, and every record (see
    :func:`check_annotation_record`)."""
    path = entry["annotation_path"]
    result = DatasetAnnotations(name=name, path=path, data_path=entry.get("data_path", ""))
    if not entry.get("labelled", True):
        result.file_error = (
            f"{path} holds inference inputs without answers (val_hidden / test), not training data"
        )
        return result
    if not os.path.isfile(path):
        result.file_error = f"file not found: {path}"
        return result
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        result.file_error = f"not valid JSON: {path}: {e}"
        return result
    if not isinstance(records, list):
        result.file_error = f"{path} holds a JSON {type(records).__name__}, not a list of records"
        return result
    from qwenvl.data.dataset import resolve_image_path  # relative paths resolve as in training

    source = {"data_path": result.data_path, "file": path}
    result.records = len(records)
    for i, rec in enumerate(records):
        problems = check_annotation_record(rec)
        result.issues += [RecordIssue(i, kind, detail) for kind, detail in problems]
        if problems and problems[0][0] in (NOT_AN_OBJECT, MISSING_KEYS, BAD_IMAGE_FIELD):
            continue
        images = images_of(rec)
        result.image_refs += len(images)
        for p in images:
            result.images.setdefault(resolve_image_path(p, source), i)
    return result


def run_annotation_tests(cfg: DataCheckConfig) -> AnnotationResult:
    """Select the datasets and check each annotation file."""
    converted = Path(cfg.converted_dir) if cfg.converted_dir else default_converted_dir()
    result = AnnotationResult(converted_dir=str(converted))
    chosen, result.errors = resolve_check_datasets(cfg.datasets, cfg.converted_dir)
    if not chosen and not result.errors:
        result.errors.append(
            f"no labelled training dataset is registered (looked for <dataset>_train.json in {converted}). "
            f"Convert the data first: {CONVERT_COMMAND} --output_dir {converted}, or pass --converted_dir."
        )
    result.datasets = [check_annotation_file(name, entry) for name, entry in chosen]
    return result
