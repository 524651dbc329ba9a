"""Checks on converted Qwen3-VL JSON files (``<dataset>_<split>.json``, format: ``qwenvl/flare/schema.py``).

Errors (any one fails validation): a file that is not a JSON list; a record without ``image`` /
``conversations`` structure; a ``<image>`` tag count different from the number of images, or a tag in an answer;
an empty answer in a labelled record (``meta.has_answer`` true) - these four are the record structure of
``qwenvl.flare.schema.record_problems``; an image path that is not absolute, missing, or does not decode; a
repeat of an earlier record's images + question; a box answer that is not JSON boxes (on the 0-1000 grid when
``meta.box_format`` is ``qwen1000``).

Warnings, each naming the dataset, split, file, record and ImageName: a val record whose image is byte-identical
to an image of the dataset's train file (``train_val_leak``, one warning per record, so the records about one
image are all named; the real FLARE25 data has some); known answer noise that ``--keep_noisy`` let through
(``answer_not_an_option``, ``several_answers_single_label``: ``TaskType.raw_answer_problem``); a human turn that
is not the task's prompt of ``meta.question`` (``prompt_mismatch``: converted by an older converter, or edited);
an option-task answer that is not written in its dataset's answer vocabulary (``answer_not_in_vocabulary``:
option letters where the dataset answers in texts, or the other way round; the train file's vocabulary, as the
converter recorded it).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from data_conversion.converter import REPORT_NAME
from qwenvl.flare.images import MISSING, ImageInfo, inspect_image
from qwenvl.flare.leaks import TRAIN_VAL_LEAK, ImageDigests, find_leaks
from qwenvl.flare.schema import (
    EMPTY_ANSWER,
    IMAGE_TAG,
    SHAPE_PROBLEMS,
    TAG_IN_ANSWER,
    TAG_MISMATCH,
    human_image_tags,
    images_of,
    record_problems,
)
from qwenvl.flare.tasks import TASKS
from qwenvl.flare.vocabulary import AnswerVocabulary, recorded_vocabularies, training_vocabularies

# Check names used in the report's "errors" / "warnings" entries (and EMPTY_ANSWER, the schema's own kind).
UNREADABLE_FILE = "unreadable_file"
INVALID_RECORD = "invalid_record"  # any shape problem of qwenvl.flare.schema.record_problems
IMAGE_TAG_MISMATCH = "image_tag_mismatch"  # the schema's TAG_MISMATCH and TAG_IN_ANSWER
RELATIVE_PATH = "relative_image_path"
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
DUPLICATE = "duplicate"
BAD_BOX_ANSWER = "bad_box_answer"
PROMPT_MISMATCH = "prompt_mismatch"  # a warning; TRAIN_VAL_LEAK and the noise reasons are warnings too
NOT_IN_VOCABULARY = (
    "answer_not_in_vocabulary"  # a warning: an option answer in another form than its dataset's
)

_FILE_RE = re.compile(r"^(?P<dataset>.+?)_(?P<split>train|val_hidden|val|test)\.json$")


@dataclass(frozen=True)
class Issue:
    """One error or warning: the file, the record index (``None`` for file-level), the check and details;
    warnings about a record also name its dataset, split and ImageName (from ``meta``)."""

    file: str
    index: int | None
    check: str
    detail: str
    dataset: str | None = None
    split: str | None = None
    image_name: Any = None


@dataclass
class FileStats:
    """Per-file figures of the validation report."""

    records: int = 0
    images: int = 0
    distinct_images: int = 0
    multi_image_records: int = 0
    labelled_records: int = 0
    task_types: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    warnings: int = 0


class _Images(ImageDigests):
    """Decode (and, for leak checks, hash) each distinct image path once."""

    def __init__(self) -> None:
        super().__init__()
        self._info: dict[str, ImageInfo] = {}

    def info(self, path: str) -> ImageInfo:
        if path not in self._info:
            self._info[path] = inspect_image(path)
        return self._info[path]


# ----------------------------------------------------------------------------------------------------------
# One record
# ----------------------------------------------------------------------------------------------------------


def _well_formed(rec: Any) -> bool:
    """Whether a record has the ``image`` + ``conversations`` shape, so its images and turns can be read."""
    return not any(kind in SHAPE_PROBLEMS for kind, _ in record_problems(rec, labelled=False))


def _is_labelled(rec: dict) -> bool:
    meta = rec.get("meta")
    return not isinstance(meta, dict) or meta.get("has_answer", True) is not False


def _question(rec: dict) -> str:
    meta = rec.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("question"), str):
        return meta["question"]
    return rec["conversations"][0]["value"].replace(f"{IMAGE_TAG}\n", "").replace(IMAGE_TAG, "")


def check_record(rec: Any, images: _Images) -> list[tuple[str, str]]:
    """(check, detail) problems of one record, duplicates aside."""
    problems = record_problems(rec, labelled=isinstance(rec, dict) and _is_labelled(rec))
    if problems and problems[0][0] in SHAPE_PROBLEMS:  # a record that cannot be read counts once
        return [(INVALID_RECORD, problems[0][1])]
    out: list[tuple[str, str]] = []
    paths = images_of(rec)
    for kind, detail in problems:
        if kind == TAG_MISMATCH:  # the report's own, shorter wording
            out.append(
                (IMAGE_TAG_MISMATCH, f"{human_image_tags(rec)} {IMAGE_TAG} tag(s) for {len(paths)} image(s)")
            )
        elif kind == TAG_IN_ANSWER:
            out.append((IMAGE_TAG_MISMATCH, detail))
    for path in paths:
        if not os.path.isabs(path):
            out.append(
                (RELATIVE_PATH, f"{path} is not absolute (registry entries use data_path ''); re-convert")
            )
            continue
        info = images.info(path)
        if not info.ok:
            out.append((MISSING_IMAGE if info.problem == MISSING else CORRUPT_IMAGE, info.detail))
    if _is_labelled(rec):
        empty = [detail for kind, detail in problems if kind == EMPTY_ANSWER]
        if empty:
            out.append((EMPTY_ANSWER, f"{empty[0]} (meta.has_answer is true)"))
        else:
            meta = rec.get("meta") or {}
            task = TASKS.get(meta.get("task_type"))
            box = (
                task.target_problem(rec["conversations"][1]["value"], meta.get("box_format"))
                if task
                else None
            )
            if box:
                out.append((BAD_BOX_ANSWER, box))
    return out


def record_warnings(rec: Any) -> list[tuple[str, str]]:
    """(check, detail) warnings of a well-formed record: known answer noise (labelled records) and a human
    turn that is not its task's prompt of ``meta.question``."""
    meta = rec.get("meta") if isinstance(rec, dict) else None
    task = TASKS.get(meta.get("task_type")) if isinstance(meta, dict) else None
    if task is None or not isinstance(meta.get("question"), str):
        return []
    out: list[tuple[str, str]] = []
    turns = rec["conversations"]
    if _is_labelled(rec) and turns[1]["value"].strip():
        noise = task.raw_answer_problem(turns[1]["value"], meta["question"])
        if noise:
            out.append(noise)
    expected = task.prompt(meta["question"], meta.get("box_format"))
    shown = turns[0]["value"].replace(f"{IMAGE_TAG}\n", "").replace(IMAGE_TAG, "")
    if shown != expected:
        rule = task.prompt_rule(meta["question"], meta.get("box_format"))
        out.append(
            (
                PROMPT_MISMATCH,
                f"the human turn is not the {task.name} prompt of meta.question (rule {rule}): "
                f"{shown[-80:]!r} vs {expected[-80:]!r}; re-convert",
            )
        )
    return out


def _issue(path: Path, index: int | None, check: str, detail: str, rec: Any = None) -> Issue:
    """An issue of file ``path``, naming the record's dataset, split and ImageName when ``rec`` has a meta."""
    meta = rec.get("meta") if isinstance(rec, dict) else None
    if not isinstance(meta, dict):
        return Issue(path.name, index, check, detail)
    return Issue(
        path.name, index, check, detail, meta.get("dataset"), meta.get("split"), meta.get("image_name")
    )


# ----------------------------------------------------------------------------------------------------------
# Files and folders
# ----------------------------------------------------------------------------------------------------------


def _load(path: Path) -> tuple[list | None, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"not valid JSON: {e}"
    if not isinstance(data, list):
        return None, f"holds a JSON {type(data).__name__}, expected a list of records"
    return data, ""


def validate_file(path: Path, images: _Images) -> tuple[FileStats, list[Issue], list[Issue], list | None]:
    """Check one converted file; returns its stats, its errors, its warnings and its records (``None`` if
    unreadable)."""
    stats = FileStats()
    data, problem = _load(path)
    if data is None:
        return stats, [Issue(path.name, None, UNREADABLE_FILE, f"{path}: {problem}")], [], None
    errors: list[Issue] = []
    warnings: list[Issue] = []
    seen: dict[tuple, int] = {}
    distinct: set[str] = set()
    tasks: Counter = Counter()
    for index, rec in enumerate(data):
        errors += [_issue(path, index, check, detail, rec) for check, detail in check_record(rec, images)]
        if not _well_formed(rec):
            continue
        warnings += [_issue(path, index, check, detail, rec) for check, detail in record_warnings(rec)]
        paths = images_of(rec)
        stats.images += len(paths)
        distinct.update(paths)
        stats.multi_image_records += len(paths) > 1
        stats.labelled_records += _is_labelled(rec)
        tasks[str((rec.get("meta") or {}).get("task_type", "unknown"))] += 1
        key = (tuple(paths), _question(rec))
        if key in seen:
            errors.append(
                _issue(path, index, DUPLICATE, f"same images and question as record {seen[key]}", rec)
            )
        else:
            seen[key] = index
    stats.records = len(data)
    stats.distinct_images = len(distinct)
    stats.task_types = dict(sorted(tasks.items()))
    stats.errors = len(errors)
    stats.warnings = len(warnings)
    return stats, errors, warnings, data


def leak_warnings(train_path: Path, train: list, val_path: Path, val: list, images: _Images) -> list[Issue]:
    """One ``train_val_leak`` warning per val record showing an image byte-identical to an image of the train
    file (every record of a leaked image: the records about one image stay together)."""
    train_ok = [r if _well_formed(r) else None for r in train]
    val_ok = [r if _well_formed(r) else None for r in val]
    out = []
    for leak in find_leaks(train_ok, val_ok, images):
        train_meta = (
            (train[leak.train_index].get("meta") or {}) if isinstance(train[leak.train_index], dict) else {}
        )
        detail = (
            f"image {leak.image} is byte-identical to {leak.train_image} of {train_path.name} "
            f"(record {leak.train_index}, ImageName {json.dumps(train_meta.get('image_name'))})"
        )
        out.append(_issue(val_path, leak.index, TRAIN_VAL_LEAK, detail, val[leak.index]))
    return out


def dataset_vocabularies(path: Path, records: list) -> dict[str, AnswerVocabulary]:
    """``{task type: vocabulary}`` of one converted file: as the converter recorded it (the conversion report
    beside it), else learnt from its labelled records."""
    learnt = training_vocabularies(r for r in records if _well_formed(r))
    merged: dict[str, AnswerVocabulary] = {}
    for by_task in learnt.values():
        merged.update(by_task)
    return {**merged, **recorded_vocabularies(path)}


def vocabulary_warnings(loaded: dict[tuple[str, str], tuple[Path, list]]) -> dict[str, list[Issue]]:
    """Per file: one ``answer_not_in_vocabulary`` warning per labelled option-task record whose answer is not
    written in its dataset's answer vocabulary (the train file's, else the file's own: option letters or
    texts the question offers). The challenge compares answers as text, so such a record is scored 0 for a
    model that answers in the dataset's vocabulary, and training on it teaches two forms."""
    out: dict[str, list[Issue]] = {}
    for (dataset, _split), (path, records) in sorted(loaded.items()):
        source_path, source = loaded.get((dataset, "train"), (path, records))
        vocabularies = dataset_vocabularies(source_path, source)
        found = []
        for index, rec in enumerate(records):
            if not _well_formed(rec) or not _is_labelled(rec):
                continue
            meta = rec.get("meta") or {}
            task = TASKS.get(meta.get("task_type"))
            vocabulary = vocabularies.get(meta.get("task_type")) if task is not None else None
            answer = rec["conversations"][1]["value"]
            if vocabulary is None or not answer.strip():
                continue
            if not task.in_vocabulary(answer, meta.get("question"), vocabulary):
                detail = (
                    f"answer {answer[:80]!r} is not in {dataset}'s {task.name} answer vocabulary "
                    f"({vocabulary.describe()}, from {source_path.name}; in form: "
                    f"{task.answer_kind(answer, meta.get('question')) or 'no option'}): the challenge compares "
                    "answers as text, so an answer in the dataset's vocabulary scores 0 here"
                )
                found.append(_issue(path, index, NOT_IN_VOCABULARY, detail, rec))
        if found:
            out[path.name] = found
    return out


def converted_files(converted_dir: Path) -> list[Path]:
    """Every ``*.json`` in ``converted_dir`` except the conversion report, sorted by name."""
    return sorted(p for p in converted_dir.glob("*.json") if p.is_file() and p.name != REPORT_NAME)


def validate(converted_dir: str | os.PathLike) -> dict:
    """Validate every converted file in ``converted_dir`` and return the report (``ok`` is false on any
    error). Raises ``FileNotFoundError`` when the folder does not exist."""
    root = Path(converted_dir).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"converted-data folder {root} does not exist; run the converter first")
    images = _Images()
    files: dict[str, FileStats] = {}
    errors: list[Issue] = []
    warnings: list[Issue] = []
    loaded: dict[tuple[str, str], tuple[Path, list]] = {}
    paths = converted_files(root)
    if not paths:
        errors.append(Issue(str(root), None, UNREADABLE_FILE, f"no converted *.json files in {root}"))
    for path in paths:
        stats, file_errors, file_warnings, data = validate_file(path, images)
        files[path.name], errors, warnings = stats, errors + file_errors, warnings + file_warnings
        m = _FILE_RE.match(path.name)
        if m and data is not None:
            loaded[(m["dataset"], m["split"])] = (path, data)
    for name, found in vocabulary_warnings(loaded).items():
        warnings += found
        files[name].warnings += len(found)
    for (dataset, split), (val_path, val) in sorted(loaded.items()):
        if split != "val" or (dataset, "train") not in loaded:
            continue
        train_path, train = loaded[(dataset, "train")]
        leaks = leak_warnings(train_path, train, val_path, val, images)
        warnings += leaks
        files[val_path.name].warnings += len(leaks)
    return _report(root, files, errors, warnings)


def _report(root: Path, files: dict[str, FileStats], errors: list[Issue], warnings: list[Issue]) -> dict:
    return {
        "converted_dir": str(root),
        "ok": not errors,
        "n_errors": len(errors),
        "n_warnings": len(warnings),
        "error_counts": dict(sorted(Counter(e.check for e in errors).items())),
        "warning_counts": dict(sorted(Counter(w.check for w in warnings).items())),
        "files": {name: asdict(stats) for name, stats in files.items()},
        "errors": [asdict(e) for e in errors],
        "warnings": [asdict(w) for w in warnings],
    }


def errors_by(report: dict, check: str) -> list[dict]:
    """The report's errors of one check."""
    return [e for e in report["errors"] if e["check"] == check]


def validation_table(report: dict) -> Table:
    """A rich table with one row per converted file."""
    table = Table(title=f"Converted data in {report['converted_dir']}")
    table.add_column("file", no_wrap=True)
    for col in ("records", "images", "multi-img", "labelled", "errors", "warnings"):
        table.add_column(col, justify="right")
    table.add_column("task types")
    for name, s in report["files"].items():
        style = "red" if s["errors"] else ("yellow" if s["warnings"] else None)
        tasks = ", ".join(f"{t} {n}" for t, n in s["task_types"].items())
        counts = (
            s["records"],
            s["images"],
            s["multi_image_records"],
            s["labelled_records"],
            s["errors"],
            s["warnings"],
        )
        table.add_row(name, *(str(c) for c in counts), tasks, style=style)
    return table


def describe_issues(issues: list[dict], limit: int = 50) -> list[str]:
    """Lines ``file[index] ImageName check: detail`` for the first ``limit`` issues, then a count of the rest."""
    lines = []
    for issue in issues[:limit]:
        where = issue["file"] if issue["index"] is None else f"{issue['file']}[{issue['index']}]"
        if issue.get("image_name") is not None:
            where += f" {json.dumps(issue['image_name'])}"
        lines.append(f"{where} {issue['check']}: {issue['detail']}")
    if len(issues) > limit:
        lines.append(f"... and {len(issues) - limit} more (see --save_report)")
    return lines
