"""The data check's report: the three sections run in order, each printed as it completes, then the user's
guide's ``TEST SUMMARY`` block with one PASSED / FAILED verdict per section."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qwenvl.tools.data_check.annotations import (
    ISSUE_FIXES,
    AnnotationResult,
    RecordIssue,
    run_annotation_tests,
)
from qwenvl.tools.data_check.config import CONVERT_COMMAND, DataCheckConfig, Emit
from qwenvl.tools.data_check.images import ImageResult, run_image_tests
from qwenvl.tools.data_check.samples import ModelResult, run_model_tests

MAX_LISTED = 10  # offending records / images listed per kind before "... and N more"
RULE = "=" * 80


def _listed(items: Sequence[str], limit: int = MAX_LISTED) -> list[str]:
    more = [f"... and {len(items) - limit} more"] if len(items) > limit else []
    return list(items[:limit]) + more


# ------------------------------------------------------------------------------------------- the sections
def format_annotations(res: AnnotationResult) -> list[str]:
    """Per-dataset lines of the Annotation Tests section."""
    lines = []
    width = max([len(d.name) for d in res.datasets] + [10])
    for d in res.datasets:
        mark = "✅" if d.passed else "❌"
        if d.file_error:
            lines.append(f"  {mark} {d.name.ljust(width)}  {d.file_error}")
            if "not found" in d.file_error or "not valid JSON" in d.file_error:
                lines.append(f"       fix: re-run the conversion ({CONVERT_COMMAND} --datasets ...)")
            continue
        lines.append(
            f"  {mark} {d.name.ljust(width)}  {d.records:>6} records  {len(d.images):>6} images  {d.path}"
        )
        by_kind: dict[str, list[RecordIssue]] = {}
        for issue in d.issues:
            by_kind.setdefault(issue.kind, []).append(issue)
        for kind, issues in by_kind.items():
            idx = ", ".join(str(i.index) for i in issues[:MAX_LISTED]) + (
                ", ..." if len(issues) > MAX_LISTED else ""
            )
            lines.append(f"       {len(issues)} record(s) {kind}: records {idx}")
            lines += [f"         record {i.index}: {i.detail}" for i in issues[:3]]
            lines.append(f"         fix: {ISSUE_FIXES[kind]}")
    lines += [f"  ❌ {e}" for e in res.errors]
    lines.append(f"  Total: {res.total_records} records in {len(res.datasets)} dataset(s)")
    return lines


def format_images(res: ImageResult) -> list[str]:
    """Lines of the Image Tests section."""
    lines = [f"  {name}: {n} decoded" for name, n in res.per_dataset.items()]
    lines.append(
        f"  Existence checked for all {res.referenced} referenced images; {res.tested} fully decoded"
    )
    if res.missing:
        lines.append(f"  ❌ {len(res.missing)} missing image(s) (training drops their records):")
        lines += [f"       {line}" for line in _listed([p.describe() for p in res.missing])]
    if res.corrupt:
        lines.append(f"  ❌ {len(res.corrupt)} corrupt image(s) (training would skip these samples):")
        lines += [f"       {line}" for line in _listed([p.describe() for p in res.corrupt])]
    if res.missing or res.corrupt:
        lines.append(
            "       fix: restore the images from the original FLARE25 download and re-run the conversion "
            "(it skips and reports records whose images are missing or corrupt)"
        )
    if res.tested == 0:
        lines.append(
            "  ❌ no image to test (no dataset passed the annotation checks, or every image is missing)"
        )
    return lines


def _grid_text(grid: list[list[int]]) -> str:
    return ", ".join("x".join(map(str, g)) for g in grid) or "-"


def format_model(res: ModelResult, model_max_length: int) -> list[str]:
    """Lines of the Model Tests section."""
    if not res.processor_loaded:
        return [f"  ❌ {res.load_error}"]
    lines = [f"  Processor: {res.processor_info}"]
    if res.report is not None:
        from qwenvl.bench.projection import cost_lines
        from qwenvl.data.dataset import format_report

        lines += ["  " + line for line in format_report(res.report).splitlines()]
        lines += ["  " + line for line in cost_lines(res.report)]
        over = res.over_length
        lines.append(
            f"  Samples over --model_max_length {model_max_length}: {len(over)} (training drops them, never truncates)"
        )
        lines += [f"       {d['dataset']} record {d['index']}: {d['detail']}" for d in over[:MAX_LISTED]]
        other = [d for d in res.report["dropped"] if d["reason"] != "over_length"]
        if other:
            lines.append(f"  Other records the training data check drops: {len(other)}")
            lines += [
                f"       {d['dataset']} record {d['index']}: {d['reason']}: {d['detail']}"
                for d in other[:MAX_LISTED]
            ]
    if res.dataset_error:
        lines.append(f"  ❌ {res.dataset_error}")
    if res.samples:
        lines.append("  Samples encoded by SupervisedDataset.__getitem__ (the training code path):")
    for s in res.samples:
        mark = "✅" if s.passed else "❌"
        if not s.encoded:
            lines.append(f"  {mark} {s.dataset} record {s.index}: {s.n_images} image(s), not encoded")
        else:
            lines.append(
                f"  {mark} {s.dataset} record {s.index}: {s.n_images} image(s), grid {_grid_text(s.grid)} -> "
                f"{s.image_tokens} <|image_pad|> (expected {s.expected_image_tokens}), {s.length} tokens, "
                f"{s.supervised} supervised: {s.supervised_text[:60]!r}"
            )
        lines += [f"       problem: {p}" for p in s.problems]
    return lines


# -------------------------------------------------------------------------------------------- the summary
@dataclass
class DataCheckResult:
    """All three sections; ``passed`` only when every one passed."""

    annotations: AnnotationResult
    images: ImageResult
    model: ModelResult

    @property
    def passed(self) -> bool:
        return self.annotations.passed and self.images.passed and self.model.passed


def _verdict(ok: bool) -> str:
    return "✅ PASSED" if ok else "❌ FAILED"


def format_check_summary(res: DataCheckResult, cfg: DataCheckConfig) -> list[str]:
    """The guide's ``TEST SUMMARY`` block."""
    a, im, m = res.annotations, res.images, res.model
    lines = [RULE, "TEST SUMMARY", RULE, ""]
    lines += [
        f"📋 Annotation Tests: {_verdict(a.passed)}",
        f"   Total samples: {a.total_records}",
        f"   Datasets: {len(a.datasets)}",
    ]
    bad = (
        sum(len(d.issues) for d in a.datasets)
        + sum(d.file_error is not None for d in a.datasets)
        + len(a.errors)
    )
    if bad:
        lines.append(f"   Problems: {bad} (listed above)")
    lines += ["", f"📸 Image Tests: {_verdict(im.passed)}", f"   Images tested: {im.tested}"]
    lines.append(f"   Missing: {len(im.missing)}")
    lines += [f"      {line}" for line in _listed([p.path for p in im.missing], 5)]
    lines.append(f"   Corrupted: {len(im.corrupt)}")
    lines += [f"      {line}" for line in _listed([p.path for p in im.corrupt], 5)]
    lines += ["", f"🔧 Model Tests: {_verdict(m.passed)}"]
    if not m.processor_loaded:
        lines.append(f"   Processor not loaded: {m.model_path} (see above)")
    else:
        failed = sum(not s.passed for s in m.samples)
        lines.append(f"   Samples tested: {len(m.samples)}" + (f" ({failed} failed)" if failed else ""))
        if m.report is not None:
            n_over = len(m.over_length)
            warn = (
                " ⚠️ dropped from training (raise --model_max_length or lower the image budget: NAME@TOKENS, --max_pixels)"
                if n_over
                else ""
            )
            lines.append(f"   Over model_max_length {cfg.model_max_length}: {n_over}{warn}")
        if m.dataset_error:
            lines.append(f"   {m.dataset_error}")
    lines += ["", RULE]
    if res.passed:
        lines.append("🎉 ALL TESTS PASSED - Ready for training!")
    else:
        failed_sections = [
            n for n, ok in (("Annotation", a.passed), ("Image", im.passed), ("Model", m.passed)) if not ok
        ]
        lines.append(
            f"❌ TESTS FAILED ({', '.join(failed_sections)}) - fix the problems above before training"
        )
    return lines + [RULE]


# --------------------------------------------------------------------------------------------- the runner
def _section(emit: Emit, title: str, first: bool = False) -> None:
    if not first:
        emit("")
    emit(RULE)
    emit(title)
    emit(RULE)


def run_data_checks(cfg: DataCheckConfig, emit: Emit = print, processor: Any = None) -> DataCheckResult:
    """Run the three sections in order, printing each as it completes, then the summary.

    ``processor`` (optional) skips loading one: the pixel limits of ``cfg`` are applied to it.
    """
    ann = run_annotation_tests(cfg)
    _section(emit, f"📋 ANNOTATION TESTS  (registry: {ann.converted_dir})", first=True)
    for line in format_annotations(ann):
        emit(line)
    scope = "all" if cfg.all_images else f"a seeded sample of {cfg.num_images}"
    _section(emit, f"📸 IMAGE TESTS  ({scope} decoded with the training loader, seed {cfg.seed})")
    images = run_image_tests(ann, cfg)
    for line in format_images(images):
        emit(line)
    _section(emit, f"🔧 MODEL TESTS  (model_max_length {cfg.model_max_length}, {cfg.num_samples} samples)")
    model = run_model_tests(ann, cfg, emit, processor)
    for line in format_model(model, cfg.model_max_length):
        emit(line)
    result = DataCheckResult(ann, images, model)
    emit("")
    for line in format_check_summary(result, cfg):
        emit(line)
    return result
