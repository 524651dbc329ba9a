"""Checks on converted Qwen3-VL JSON files (``<dataset>_<split>.json``, format: ``qwenvl/flare/schema.py``).

Errors (any one fails validation): a file that is not a JSON list; a record without ``image`` /
``conversations`` structure; a ``<image>`` tag count different from the number of images, or a tag in an answer;
an empty answer in a labelled record (``meta.has_answer`` true) - these four are the record structure of
``qwenvl.flare.schema.record_problems``; an image path that is not absolute, missing, or does not decode; a
repeat of an earlier record's images + question; a box answer that is not JSON boxes (on the 0-1000 grid when
``meta.box_format`` is ``qwen1000``).

Warnings: images shared byte-for-byte between a dataset's train file and its val file (train/val leakage; the
real FLARE25 data has some).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from data_conversion.converter import REPORT_NAME
from qwenvl.flare.images import MISSING, ImageInfo, inspect_image
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

# Check names used in the report's "errors" / "warnings" entries (and EMPTY_ANSWER, the schema's own kind).
UNREADABLE_FILE = "unreadable_file"
INVALID_RECORD = "invalid_record"  # any shape problem of qwenvl.flare.schema.record_problems
IMAGE_TAG_MISMATCH = "image_tag_mismatch"  # the schema's TAG_MISMATCH and TAG_IN_ANSWER
RELATIVE_PATH = "relative_image_path"
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
DUPLICATE = "duplicate"
BAD_BOX_ANSWER = "bad_box_answer"
TRAIN_VAL_LEAK = "train_val_leak"  # a warning

_FILE_RE = re.compile(r"^(?P<dataset>.+?)_(?P<split>train|val_hidden|val|test)\.json$")
_LEAK_EXAMPLES = 5


@dataclass(frozen=True)
class Issue:
    """One error or warning: the file, the record index (``None`` for file-level), the check and details."""

    file: str
    index: int | None
    check: str
    detail: str


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


class _Images:
    """Decode (and, for leak checks, hash) each distinct image path once."""

    def __init__(self) -> None:
        self._info: dict[str, ImageInfo] = {}
        self._hash: dict[str, str] = {}

    def info(self, path: str) -> ImageInfo:
        if path not in self._info:
            self._info[path] = inspect_image(path)
        return self._info[path]

    def digest(self, path: str) -> str | None:
        if path not in self._hash:
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        digest.update(chunk)
            except OSError:
                return None
            self._hash[path] = digest.hexdigest()
        return self._hash[path]


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


def validate_file(path: Path, images: _Images) -> tuple[FileStats, list[Issue], list | None]:
    """Check one converted file; returns its stats, its errors and its records (``None`` if unreadable)."""
    stats = FileStats()
    data, problem = _load(path)
    if data is None:
        return stats, [Issue(path.name, None, UNREADABLE_FILE, f"{path}: {problem}")], None
    errors: list[Issue] = []
    seen: dict[tuple, int] = {}
    distinct: set[str] = set()
    tasks: Counter = Counter()
    for index, rec in enumerate(data):
        errors += [Issue(path.name, index, check, detail) for check, detail in check_record(rec, images)]
        if not _well_formed(rec):
            continue
        paths = images_of(rec)
        stats.images += len(paths)
        distinct.update(paths)
        stats.multi_image_records += len(paths) > 1
        stats.labelled_records += _is_labelled(rec)
        tasks[str((rec.get("meta") or {}).get("task_type", "unknown"))] += 1
        key = (tuple(paths), _question(rec))
        if key in seen:
            errors.append(
                Issue(path.name, index, DUPLICATE, f"same images and question as record {seen[key]}")
            )
        else:
            seen[key] = index
    stats.records = len(data)
    stats.distinct_images = len(distinct)
    stats.task_types = dict(sorted(tasks.items()))
    stats.errors = len(errors)
    return stats, errors, data


def find_leaks(train: list, val: list, images: _Images) -> tuple[int, list[str]]:
    """How many distinct val images are byte-identical to some train image, with a few examples."""
    train_hashes: dict[str, str] = {}
    for path in _record_images(train):
        digest = images.digest(path)
        if digest:
            train_hashes.setdefault(digest, path)
    shared: dict[str, str] = {}
    for path in _record_images(val):
        digest = images.digest(path)
        if digest in train_hashes:
            shared[path] = train_hashes[digest]
    examples = [f"{v} == {t}" for v, t in list(shared.items())[:_LEAK_EXAMPLES]]
    return len(shared), examples


def _record_images(records: Iterable) -> list[str]:
    out = dict.fromkeys(p for r in records if _well_formed(r) for p in images_of(r))
    return list(out)


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
        stats, file_errors, data = validate_file(path, images)
        files[path.name], errors = stats, errors + file_errors
        m = _FILE_RE.match(path.name)
        if m and data is not None:
            loaded[(m["dataset"], m["split"])] = (path, data)
    for (dataset, split), (val_path, val) in sorted(loaded.items()):
        if split != "val" or (dataset, "train") not in loaded:
            continue
        train_path, train = loaded[(dataset, "train")]
        count, examples = find_leaks(train, val, images)
        if count:
            detail = (
                f"{count} image(s) of {val_path.name} are byte-identical to images of {train_path.name}, "
                f"e.g. {'; '.join(examples)}"
            )
            warnings.append(Issue(val_path.name, None, TRAIN_VAL_LEAK, detail))
            files[val_path.name].warnings += 1
    return _report(root, files, errors, warnings)


def _report(root: Path, files: dict[str, FileStats], errors: list[Issue], warnings: list[Issue]) -> dict:
    return {
        "converted_dir": str(root),
        "ok": not errors,
        "n_errors": len(errors),
        "n_warnings": len(warnings),
        "error_counts": dict(sorted(Counter(e.check for e in errors).items())),
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
    """Lines ``file[index] check: detail`` for the first ``limit`` issues, then a count of the rest."""
    lines = []
    for issue in issues[:limit]:
        where = issue["file"] if issue["index"] is None else f"{issue['file']}[{issue['index']}]"
        lines.append(f"{where} {issue['check']}: {issue['detail']}")
    if len(issues) > limit:
        lines.append(f"... and {len(issues) - limit} more (see --save_report)")
    return lines
