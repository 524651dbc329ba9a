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
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from qwenvl.data import draw_training_records, load_annotations, resolve_datasets
from qwenvl.data.processing import (
    check_labels,
    encode_record,
    estimate_length,
    record_images,
    record_to_messages,
    visual_token_counts,
)
from qwenvl.flare import defaults
from qwenvl.flare.images import load_rgb, read_image_size
from qwenvl.flare.pixels import BudgetPlan, ImageBudget

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
    """Why a record cannot be trained on: one of :data:`DROP_REASONS` and a human-readable detail; an
    over-long record also keeps its measured ``length`` and ``visual_tokens`` (for the length report)."""

    def __init__(
        self, reason: str, detail: str, length: int | None = None, visual_tokens: tuple[int, ...] = ()
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.length = length
        self.visual_tokens = visual_tokens


@dataclass(frozen=True)
class Sample:
    """A record that passed the checks: the record, its resolved image paths, its token length, the visual
    tokens of each image and the image budget it is encoded with (``None``: the processor's limits)."""

    record: dict
    image_paths: tuple[str, ...]
    length: int
    visual_tokens: tuple[int, ...] = ()
    budget: ImageBudget | None = None
    image_sizes: tuple[tuple[int, int], ...] = ()  # (width, height) of each image, as displayed

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
    plan: BudgetPlan | None = None
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
        return Sample(
            record, result.image_paths, result.length, result.visual_tokens, result.budget, result.image_sizes
        )

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
        budget = self.plan.for_record(record) if self.plan is not None else None
        try:
            length = estimate_length(record, self.processor, sizes, budget)
            visual = tuple(visual_token_counts(sizes, self.processor, budget))
        except ValueError as e:  # the structure passed above, so the image sizes are what the model refuses
            raise RecordProblem(UNREADABLE_IMAGE, f"image sizes {sizes} of {paths}: {e}") from None
        try:
            check_labels(record, self.processor)
        except ValueError as e:
            raise RecordProblem(INVALID_RECORD, str(e)) from None
        if length > self.model_max_length:
            where = (
                f" ({sum(visual)} of them visual, budget {budget.describe()})" if budget and visual else ""
            )
            raise RecordProblem(
                OVER_LENGTH,
                f"{length} tokens{where} > model_max_length {self.model_max_length} (not truncated)",
                length,
                visual,
            )
        return Sample(record, tuple(paths), length, visual, budget, tuple(sizes))


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

    def __init__(
        self,
        records: list[dict],
        processor: Any,
        model_max_length: int,
        pixel_plan: BudgetPlan | None = None,
        mixture: dict[str, Any] | None = None,
    ) -> None:
        self.processor = processor
        self.model_max_length = int(model_max_length)
        self.pixel_plan = pixel_plan
        # False: a record that fails at training time is None; True: a SkippedRecord that names it.
        self.skip_markers = False
        checker = _Checker(processor, self.model_max_length, pixel_plan)
        self.samples: list[Sample] = []
        drawn: Counter[str] = Counter()
        dropped: dict[str, Counter[str]] = {}
        dropped_list: list[dict] = []
        measured: dict[str, list[tuple[int, tuple[int, ...]]]] = {}  # (length, visual tokens) per dataset
        for rec in _with_source(records):
            src = rec["_source"]
            drawn[src["dataset"]] += 1
            dropped.setdefault(src["dataset"], Counter())
            lengths = measured.setdefault(src["dataset"], [])
            try:
                sample = checker.check(rec)
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
                if problem.length is not None:
                    lengths.append((problem.length, problem.visual_tokens))
                continue
            self.samples.append(sample)
            lengths.append((sample.length, sample.visual_tokens))
        kept = Counter(s.source["dataset"] for s in self.samples)
        datasets: dict[str, dict[str, Any]] = {}
        for name in drawn:
            datasets[name] = {"drawn": drawn[name], "kept": kept[name], "dropped": dict(dropped[name])}
            datasets[name].update(length_report(measured[name], self.model_max_length))
            if pixel_plan is not None:
                budget = pixel_plan.for_dataset(name)
                datasets[name]["image_budget"] = {
                    "min_tokens": budget.min_tokens,
                    "max_tokens": budget.max_tokens,
                }
        for name, figures in self._kept_figures(pixel_plan is not None).items():
            datasets[name].update(figures)
        self.report: dict[str, Any] = {
            "datasets": datasets,
            "dropped": dropped_list,
            "model_max_length": self.model_max_length,
            "pixel_policy": pixel_plan.policy if pixel_plan is not None else None,
            "total_kept": len(self.samples),
        }
        if mixture is not None:  # the training mix: records, draws, classes (qwenvl.data.mixture)
            self.report["mixture"] = mixture
        self.lengths: list[int] = [s.length for s in self.samples]
        log_report(self.report)

    def _kept_figures(self, with_guide: bool) -> dict[str, dict[str, int]]:
        """Per dataset, the tokens, visual tokens and longest sample of the kept samples (what an epoch
        trains on; :mod:`qwenvl.bench.projection` prices it) and, with ``with_guide``, the same samples' figures
        at the guide's one budget (``guide_*``), computed from their image sizes without decoding a pixel."""
        guide = ImageBudget(defaults.MIN_PIXELS, defaults.MAX_PIXELS)
        out: dict[str, dict[str, int]] = {}
        for sample in self.samples:
            figures = out.setdefault(sample.source["dataset"], {})
            visual = sum(sample.visual_tokens)
            rows = [("", sample.length, visual)]
            if with_guide:
                at_guide = sum(visual_token_counts(sample.image_sizes, self.processor, guide))
                rows.append(("guide_", sample.length - visual + at_guide, at_guide))
            for key, length, tokens in rows:
                figures[f"{key}kept_tokens"] = figures.get(f"{key}kept_tokens", 0) + length
                figures[f"{key}kept_visual_tokens"] = figures.get(f"{key}kept_visual_tokens", 0) + tokens
                figures[f"{key}kept_longest"] = max(figures.get(f"{key}kept_longest", 0), length)
        return out

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
            item: dict[str, Any] = encode_record(sample.record, self.processor, images, sample.budget)
        except ValueError as e:  # e.g. the image was replaced by one the processor refuses
            return skip(f"cannot encode it with images {list(sample.image_paths)} ({e})")
        n = int(item["input_ids"].numel())
        if n > self.model_max_length:  # only if an image was replaced by a larger one since the check
            return skip(f"{n} tokens > model_max_length {self.model_max_length}")
        item["dataset"] = src["dataset"]
        item["index"] = src["index"]
        return item


def _nearest_rank(values: list[int], q: float) -> int:
    """The ``q`` quantile by nearest rank (``values`` sorted, non-empty)."""
    return values[max(0, math.ceil(q * len(values)) - 1)]


def length_report(measured: list[tuple[int, tuple[int, ...]]], model_max_length: int) -> dict[str, Any]:
    """What the length check saw of one dataset's records (``(length, visual tokens per image)`` of every
    record it could measure, kept or too long): the visual tokens per image (median, max), the sequence
    length (median, 95th percentile, max), how many exceed ``model_max_length`` and the limit that would keep
    them all. Empty when nothing could be measured."""
    if not measured:
        return {}
    lengths = sorted(length for length, _ in measured)
    images = sorted(n for _, visual in measured for n in visual)
    out: dict[str, Any] = {
        "length": {
            "median": _nearest_rank(lengths, 0.5),
            "p95": _nearest_rank(lengths, 0.95),
            "max": lengths[-1],
        },
        "over_length": sum(length > model_max_length for length in lengths),
        "length_to_keep_all": lengths[-1],
        "tokens": sum(lengths),
    }
    if images:
        out["visual_tokens_per_image"] = {"median": _nearest_rank(images, 0.5), "max": images[-1]}
    return out


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width table, one row per dataset and a total row: records drawn, kept and dropped (with the
    reasons), the image budget and the visual tokens per image (median / max), the sequence length (median /
    95th percentile / max) and how many records exceed the length limit; then the limit that keeps them all."""
    rows = [
        ("dataset", "drawn", "kept", "dropped", "budget", "img tok med/max", "length med/p95/max", "over")
    ]
    reasons_of: list[str] = [""]
    for name, d in report["datasets"].items():
        budget = d.get("image_budget")
        visual = d.get("visual_tokens_per_image")
        length = d.get("length")
        rows.append(
            (
                name,
                str(d["drawn"]),
                str(d["kept"]),
                str(sum(d["dropped"].values())),
                str(budget["max_tokens"]) if budget else "-",
                f"{visual['median']}/{visual['max']}" if visual else "-",
                f"{length['median']}/{length['p95']}/{length['max']}" if length else "-",
                str(d.get("over_length", 0)),
            )
        )
        reasons_of.append(", ".join(f"{r}={c}" for r, c in sorted(d["dropped"].items())) or "-")
    total_drawn = sum(d["drawn"] for d in report["datasets"].values())
    total_over = sum(d.get("over_length", 0) for d in report["datasets"].values())
    rows.append(
        (
            "TOTAL",
            str(total_drawn),
            str(report["total_kept"]),
            str(len(report["dropped"])),
            "",
            "",
            "",
            str(total_over),
        )
    )
    reasons_of.append("")
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    policy = report.get("pixel_policy")
    head = f"Training data check (model_max_length {report['model_max_length']}"
    head += f", pixel policy {policy}; budget = most visual tokens per image):" if policy else "):"
    lines = [head]
    for r, reasons in zip(rows, reasons_of):
        cells = [r[0].ljust(widths[0])] + [r[k].rjust(widths[k]) for k in range(1, len(r))]
        lines.append("  " + "  ".join(cells) + ("  " + reasons if reasons and reasons != "-" else ""))
    if total_over:
        keep_all = max(d.get("length_to_keep_all", 0) for d in report["datasets"].values())
        lines.append(
            f"  {total_over} record(s) exceed model_max_length {report['model_max_length']} and are dropped, "
            f"never cut: --model_max_length {keep_all} (MAX_LENGTH={keep_all}) keeps them all, or lower the "
            "dataset's image budget (NAME@TOKENS)"
        )
    return "\n".join(lines)


def format_mix(report: dict[str, Any]) -> str | None:
    """The training mix of a report (records, draws, shares of draws and tokens, draws per class), or
    ``None`` for a dataset built without one (eval sets)."""
    mix = report.get("mixture")
    if not mix:
        return None
    from qwenvl.data.mixture import DatasetDraw, format_mixture

    draws = [
        DatasetDraw(name, d["records"], d["draws"], [], d["balanced"], d.get("classes", {}))
        for name, d in mix["datasets"].items()
    ]
    tokens = {name: d.get("kept_tokens", 0) for name, d in report["datasets"].items()}
    return format_mixture(draws, tokens, mix["temperature"])


def log_report(report: dict[str, Any]) -> None:
    """Log the summary table and the training mix (INFO), and the first dropped records (WARNING) when any
    were dropped."""
    logger.info("%s", format_report(report))
    mix = format_mix(report)
    if mix:
        logger.info("%s", mix)
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
    pixel_plan: BudgetPlan | None = None,
    mixture_temperature: float | None = None,
) -> SupervisedDataset:
    """Resolve ``dataset_use`` (``"name%NN,..."``) in the registry, draw the seeded records and check them,
    each record's images within its dataset's budget of ``pixel_plan`` (``None``: the processor's limits).
    ``mixture_temperature`` (training sets): the draws shared by size^(1/T) and ``+balanced`` datasets drawn
    equally per class (:mod:`qwenvl.data.mixture`), the mix in the report; ``None`` (eval sets): every
    record at its ``%NN`` rate, no balancing."""
    specs = resolve_datasets(dataset_use, require_labels=require_labels)
    if mixture_temperature is None:
        records = [r for spec in specs for r in load_annotations(spec, seed)]
        return SupervisedDataset(records, processor, model_max_length, pixel_plan)
    records, draws = draw_training_records(specs, seed, mixture_temperature)
    mixture = {"temperature": mixture_temperature, "datasets": {d.name: d.as_record() for d in draws}}
    return SupervisedDataset(records, processor, model_max_length, pixel_plan, mixture)


__all__ = [
    "DROP_REASONS",
    "SkippedRecord",
    "SupervisedDataset",
    "build_supervised_dataset",
    "format_report",
    "resolve_image_path",
]
