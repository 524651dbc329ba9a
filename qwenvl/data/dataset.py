"""The supervised training dataset: registry entries -> checked records -> encoded samples.

Every record is checked before training, cheaply (no pixel is decoded): its structure and ``<image>`` tags,
that each image exists and its header reads, and that its exact token length fits ``model_max_length``. A record
that fails is dropped and reported, never fatal and never truncated (cutting inside an image span would break the
sample). ``SupervisedDataset.report`` says what was drawn, kept and dropped per dataset and why; a summary table
is logged. At training time an image that fails to load (deleted or corrupted since the check) makes
``__getitem__`` log a warning and return ``None`` (or, with ``skip_markers`` on, as the training recipe sets it,
a :class:`SkippedRecord` naming the record); the collators count and drop it, and the trainer names it in the
run's log.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from qwenvl.data import load_annotations, resolve_datasets
from qwenvl.data.processing import (
    check_labels,
    encode_record,
    estimate_length,
    record_images,
    record_to_messages,
)
from qwenvl.flare.images import load_rgb, read_image_size

logger = logging.getLogger(__name__)

OVER_LENGTH = "over_length"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
INVALID_RECORD = "invalid_record"
DROP_REASONS = (OVER_LENGTH, MISSING_IMAGE, UNREADABLE_IMAGE, INVALID_RECORD)
MAX_LOGGED_DROPS = 10


@dataclass(frozen=True)
class SkippedRecord:
    """What ``SupervisedDataset[i]`` returns (with ``skip_markers`` on) for a record that cannot be encoded at
    training time: which record, and why. The collators drop it and list :meth:`describe` in the batch."""

    dataset: str
    file: str
    index: int
    reason: str

    def describe(self) -> str:
        return f"{self.dataset} record {self.index} ({self.file}): {self.reason}"


class RecordProblem(Exception):
    """Why a record cannot be trained on: one of :data:`DROP_REASONS` and a human-readable detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Sample:
    """A record that passed the checks: the record, its resolved image paths and its token length."""

    record: dict
    image_paths: tuple[str, ...]
    length: int

    @property
    def source(self) -> dict:
        return self.record["_source"]


def resolve_image_path(path: str, source: dict) -> str:
    """Absolute paths as they are; a relative one joins the registry ``data_path``, else the annotation
    file's folder."""
    if os.path.isabs(path):
        return path
    base = source.get("data_path") or os.path.dirname(source.get("file", ""))
    return os.path.join(base, path)


def _meta_sizes(record: dict, n_images: int) -> list[tuple[int, int]] | None:
    """``meta.image_sizes`` as ``(w, h)`` pairs when present and well formed for ``n_images`` images."""
    meta = record.get("meta")
    sizes = meta.get("image_sizes") if isinstance(meta, dict) else None
    if not isinstance(sizes, list) or len(sizes) != n_images:
        return None
    ok = all(
        isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s)
        for s in sizes
    )
    return [(int(s[0]), int(s[1])) for s in sizes] if ok else None


@dataclass
class _Checker:
    """Checks records, caching image sizes by path and results by (file, index) for repeated draws."""

    processor: Any
    model_max_length: int
    sizes: dict[str, tuple[int, int] | RecordProblem] = field(default_factory=dict)
    results: dict[tuple[str, int], Sample | RecordProblem] = field(default_factory=dict)

    def image_size(self, path: str) -> tuple[int, int]:
        if path not in self.sizes:
            try:
                self.sizes[path] = read_image_size(path)
            except Exception as e:  # noqa: BLE001 - any header failure means "unreadable"
                self.sizes[path] = RecordProblem(UNREADABLE_IMAGE, f"{path}: {type(e).__name__}: {e}")
        size = self.sizes[path]
        if isinstance(size, RecordProblem):
            raise size
        return size

    def check(self, record: dict) -> Sample:
        src = record["_source"]
        key = (src["file"], src["index"])
        if key not in self.results:
            try:
                self.results[key] = self._check(record)
            except RecordProblem as problem:
                self.results[key] = problem
        result = self.results[key]
        if isinstance(result, RecordProblem):
            raise result
        return Sample(record, result.image_paths, result.length)

    def _check(self, record: dict) -> Sample:
        try:
            record_to_messages(record)
        except ValueError as e:
            raise RecordProblem(INVALID_RECORD, str(e)) from None
        paths = [resolve_image_path(p, record["_source"]) for p in record_images(record)]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise RecordProblem(MISSING_IMAGE, f"file not found: {', '.join(missing)}")
        sizes = _meta_sizes(record, len(paths)) or [self.image_size(p) for p in paths]
        try:
            length = estimate_length(record, self.processor, sizes)
        except ValueError as e:  # the structure passed above, so the image sizes are what the model refuses
            raise RecordProblem(UNREADABLE_IMAGE, f"image sizes {sizes} of {paths}: {e}") from None
        try:
            check_labels(record, self.processor)
        except ValueError as e:
            raise RecordProblem(INVALID_RECORD, str(e)) from None
        if length > self.model_max_length:
            raise RecordProblem(
                OVER_LENGTH, f"{length} tokens > model_max_length {self.model_max_length} (not truncated)"
            )
        return Sample(record, tuple(paths), length)


def _with_source(records: list[dict]) -> list[dict]:
    """Records as given, with a ``_source`` block added to any that lack one (records not from the registry)."""
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "_source" not in rec:
            body = rec if isinstance(rec, dict) else {"_raw": rec}
            rec = {**body, "_source": {"dataset": "records", "file": "", "index": i, "data_path": ""}}
        out.append(rec)
    return out


class SupervisedDataset(Dataset):
    """Checked, encodable records. ``report`` describes the check; ``lengths`` holds each kept sample's tokens.

    Items are ``encode_record`` dicts plus ``"dataset"`` (registry name) and ``"index"`` (record index in its
    annotation file), or ``None`` when an image can no longer be loaded (logged as a warning).
    """

    def __init__(self, records: list[dict], processor: Any, model_max_length: int) -> None:
        self.processor = processor
        self.model_max_length = int(model_max_length)
        # False: a record that fails at training time is None; True: a SkippedRecord that names it.
        self.skip_markers = False
        checker = _Checker(processor, self.model_max_length)
        self.samples: list[Sample] = []
        drawn: Counter[str] = Counter()
        dropped: dict[str, Counter[str]] = {}
        dropped_list: list[dict] = []
        for rec in _with_source(records):
            src = rec["_source"]
            drawn[src["dataset"]] += 1
            dropped.setdefault(src["dataset"], Counter())
            try:
                self.samples.append(checker.check(rec))
            except RecordProblem as problem:
                dropped[src["dataset"]][problem.reason] += 1
                dropped_list.append(
                    {
                        "dataset": src["dataset"],
                        "file": src["file"],
                        "index": src["index"],
                        "reason": problem.reason,
                        "detail": problem.detail,
                    }
                )
        kept = Counter(s.source["dataset"] for s in self.samples)
        self.report: dict[str, Any] = {
            "datasets": {
                name: {"drawn": drawn[name], "kept": kept[name], "dropped": dict(dropped[name])}
                for name in drawn
            },
            "dropped": dropped_list,
            "model_max_length": self.model_max_length,
            "total_kept": len(self.samples),
        }
        self.lengths: list[int] = [s.length for s in self.samples]
        log_report(self.report)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any] | SkippedRecord | None:
        sample = self.samples[i]
        src = sample.source
        where = f"dataset {src['dataset']} record {src['index']} ({src['file']})"

        def skip(reason: str) -> SkippedRecord | None:
            logger.warning("skipping %s: %s", where, reason)
            if not self.skip_markers:
                return None
            return SkippedRecord(str(src["dataset"]), str(src["file"]), int(src["index"]), reason)

        images = []
        for path in sample.image_paths:
            try:
                images.append(load_rgb(path))
            except Exception as e:  # noqa: BLE001 - deleted, truncated, undecodable: skip, never substitute
                return skip(f"image {path} cannot be loaded ({type(e).__name__}: {e})")
        try:
            item: dict[str, Any] = encode_record(sample.record, self.processor, images)
        except ValueError as e:  # e.g. the image was replaced by one the processor refuses
            return skip(f"cannot encode it with images {list(sample.image_paths)} ({e})")
        n = int(item["input_ids"].numel())
        if n > self.model_max_length:  # only if an image was replaced by a larger one since the check
            return skip(f"{n} tokens > model_max_length {self.model_max_length}")
        item["dataset"] = src["dataset"]
        item["index"] = src["index"]
        return item


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width table: one row per dataset (drawn, kept, dropped, reasons) and a total row."""
    rows = [("dataset", "drawn", "kept", "dropped", "reasons")]
    for name, d in report["datasets"].items():
        reasons = ", ".join(f"{r}={c}" for r, c in sorted(d["dropped"].items())) or "-"
        rows.append((name, str(d["drawn"]), str(d["kept"]), str(sum(d["dropped"].values())), reasons))
    total_drawn = sum(d["drawn"] for d in report["datasets"].values())
    total_dropped = len(report["dropped"])
    rows.append(("TOTAL", str(total_drawn), str(report["total_kept"]), str(total_dropped), ""))
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = [f"Training data check (model_max_length {report['model_max_length']}):"]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[k].rjust(widths[k]) for k in (1, 2, 3)]
        lines.append("  " + "  ".join(cells) + ("  " + r[4] if r[4] else ""))
    return "\n".join(lines)


def log_report(report: dict[str, Any]) -> None:
    """Log the summary table (INFO), and the first dropped records (WARNING) when any were dropped."""
    logger.info("%s", format_report(report))
    dropped = report["dropped"]
    if not dropped:
        return
    lines = [
        f"{len(dropped)} record(s) dropped before training; the first {min(len(dropped), MAX_LOGGED_DROPS)}:"
    ]
    for d in dropped[:MAX_LOGGED_DROPS]:
        lines.append(f"  {d['dataset']} record {d['index']} ({d['file']}): {d['reason']}: {d['detail']}")
    logger.warning("%s", "\n".join(lines))


def build_supervised_dataset(
    dataset_use: str,
    processor: Any,
    model_max_length: int,
    seed: int,
    require_labels: bool = True,
) -> SupervisedDataset:
    """Resolve ``dataset_use`` (``"name%NN,..."``) in the registry, draw the seeded records and check them."""
    records: list[dict] = []
    for spec in resolve_datasets(dataset_use, require_labels=require_labels):
        records.extend(load_annotations(spec, seed))
    return SupervisedDataset(records, processor, model_max_length)


__all__ = [
    "DROP_REASONS",
    "SkippedRecord",
    "SupervisedDataset",
    "build_supervised_dataset",
    "format_report",
    "resolve_image_path",
]
