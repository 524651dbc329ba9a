"""``conversion_report.json``: what a conversion run produced, merged with what earlier runs left on disk.

One entry per (dataset, output split), built from that split's :class:`SplitResult`; every entry holds
``raw = converted + skipped``. A run replaces only the entries it touched and keeps the others, so the report
always describes the files in the output folder (``data_conversion/README.md``, "What is skipped, and the
report", lists the fields). Nothing is written here; the converter writes the merged report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_conversion.records import Skip
from qwenvl.flare.datasets import FLARE_DATASETS
from qwenvl.flare.raw import SPLIT_FOLDERS
from qwenvl.flare.schema import SKIP_REASONS

TOOL_NAME = "convert_flare_to_qwen3vl"
TOOL_VERSION = "1.0.0"
REPORT_NAME = "conversion_report.json"

# The output splits (``<dataset>_<split>.json``), in report order: train, val, val_hidden, test.
OUTPUT_SPLITS = tuple(SPLIT_FOLDERS)


@dataclass
class SplitResult:
    """What converting one (dataset, output split) produced: the makings of one report entry."""

    dataset: str
    split: str
    labelled: bool
    records: list[dict] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    raw: int = 0
    source_files: list[str] = field(default_factory=list)
    file_errors: list[dict] = field(default_factory=list)
    missing_folders: list[str] = field(default_factory=list)
    answers_ignored: int = 0
    readable_sources: int = 0


def report_entry(res: SplitResult, output_file: Path | None, settings: dict) -> dict:
    """The report entry of one (dataset, output split); ``output_file`` is ``None`` when none was written."""
    by_reason = Counter(s.reason for s in res.skips)
    tasks = Counter(r["meta"]["task_type"] for r in res.records)
    entry = {
        "raw": res.raw,
        "converted": len(res.records),
        "skipped": len(res.skips),
        "skipped_by_reason": {r: by_reason[r] for r in SKIP_REASONS if by_reason[r]},
        "labelled": res.labelled,
        "source_files": res.source_files,
        "output_file": str(output_file) if output_file else None,
        "task_types": dict(sorted(tasks.items())),
        "multi_image_records": sum(isinstance(r["image"], list) for r in res.records),
        "file_errors": res.file_errors,
        "missing_folders": res.missing_folders,
        "box_format": settings["box_format"],
        "input_dir": settings["input_dir"],
        "converted_at": settings["time"],
    }
    if not res.labelled:
        entry["answers_ignored"] = res.answers_ignored
    return entry


def load_report(path: Path) -> dict:
    """The existing report, or an empty one when absent or unreadable."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) and isinstance(report.get("datasets"), dict) else {}


def merge_report(
    old: dict, results: Sequence[SplitResult], entries: dict, touched: set, settings: dict
) -> dict:
    """A report whose entries for the ``touched`` (dataset, split) pairs come from this run; every other
    entry of ``old`` is kept as it was."""

    def keep(item: dict) -> bool:
        return (item.get("dataset"), item.get("split")) not in touched

    datasets: dict[str, dict] = {}
    for name, splits in old.get("datasets", {}).items():
        kept = {s: e for s, e in splits.items() if (name, s) not in touched}
        if kept:
            datasets[name] = kept
    for (name, split), entry in entries.items():
        datasets.setdefault(name, {})[split] = entry
    order = list(FLARE_DATASETS)
    datasets = {
        n: {s: datasets[n][s] for s in sorted(datasets[n], key=_split_rank)}
        for n in sorted(datasets, key=lambda n: order.index(n) if n in order else len(order))
    }
    skipped = [s for s in old.get("skipped", []) if keep(s)]
    skipped += [asdict(s) for res in results for s in res.skips]
    file_errors = [e for e in old.get("file_errors", []) if keep(e)]
    file_errors += [e for res in results for e in res.file_errors]
    return {
        "tool": TOOL_NAME,
        "tool_version": TOOL_VERSION,
        "settings": settings,
        "totals": _totals(datasets),
        "datasets": datasets,
        "skipped": skipped,
        "file_errors": file_errors,
    }


def _split_rank(split: str) -> int:
    return OUTPUT_SPLITS.index(split) if split in OUTPUT_SPLITS else len(OUTPUT_SPLITS)


def _totals(datasets: dict) -> dict:
    totals: Counter = Counter()
    reasons: Counter = Counter()
    for splits in datasets.values():
        for entry in splits.values():
            for key in ("raw", "converted", "skipped"):
                totals[key] += entry.get(key, 0)
            reasons.update(entry.get("skipped_by_reason", {}))
    return {
        "raw": totals["raw"],
        "converted": totals["converted"],
        "skipped": totals["skipped"],
        "skipped_by_reason": {r: reasons[r] for r in SKIP_REASONS if reasons[r]},
    }
