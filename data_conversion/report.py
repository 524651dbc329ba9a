"""``conversion_report.json``: what a conversion run produced, merged with what earlier runs left on disk.

One entry per (dataset, output split), built from that split's :class:`SplitResult`; every entry holds
``raw = converted + skipped`` (noisy records converted under ``--keep_noisy`` count as converted and are
listed in ``kept_noisy``). Each entry also counts the prompt rules applied (``prompt_rules``), records the
answer vocabulary of each option task type of a labelled split (``answer_vocabulary``: option letters or texts,
the separator, the case, learnt from its answers once, here) and, for ``val``, the records whose images are
byte-identical to training images (``train_val_leaks``). A run replaces only the entries it touched and keeps the others, so the report
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
from qwenvl.flare.schema import NOISE_REASONS, SKIP_REASONS
from qwenvl.flare.vocabulary import CONVERSION_REPORT, RUN_INFO_KEY, training_vocabularies

TOOL_NAME = "convert_flare_to_qwen3vl"
TOOL_VERSION = "1.0.0"
REPORT_NAME = CONVERSION_REPORT  # conversion_report.json, where training and evaluation look for vocabularies

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
    kept_noisy: list[Skip] = field(default_factory=list)  # noisy records converted under --keep_noisy
    leaks: list[dict] | None = None  # val only: records with training images' bytes; None = not checked
    leaks_checked_against: str | None = None  # the training records compared with


def report_entry(res: SplitResult, output_file: Path | None, settings: dict) -> dict:
    """The report entry of one (dataset, output split); ``output_file`` is ``None`` when none was written."""
    by_reason = Counter(s.reason for s in res.skips)
    noisy = Counter(s.reason for s in res.kept_noisy)
    tasks = Counter(r["meta"]["task_type"] for r in res.records)
    rules = Counter(r["meta"].get("prompt_rule") for r in res.records)
    entry = {
        "raw": res.raw,
        "converted": len(res.records),
        "skipped": len(res.skips),
        "skipped_by_reason": {r: by_reason[r] for r in SKIP_REASONS if by_reason[r]},
        "labelled": res.labelled,
        "source_files": res.source_files,
        "output_file": str(output_file) if output_file else None,
        "task_types": dict(sorted(tasks.items())),
        "prompt_rules": dict(sorted((str(k), n) for k, n in rules.items())),
        "kept_noisy": {r: noisy[r] for r in NOISE_REASONS if noisy[r]},
        "multi_image_records": sum(isinstance(r["image"], list) for r in res.records),
        "file_errors": res.file_errors,
        "missing_folders": res.missing_folders,
        "box_format": settings["box_format"],
        "input_dir": settings["input_dir"],
        "converted_at": settings["time"],
    }
    if res.labelled:
        learnt = training_vocabularies(res.records).get(res.dataset, {})
        entry[RUN_INFO_KEY] = {task: v.as_record() for task, v in sorted(learnt.items())}
    else:
        entry["answers_ignored"] = res.answers_ignored
    if res.split == "val":
        entry["train_val_leaks"] = (
            None
            if res.leaks is None
            else {
                "records": len(res.leaks),
                "images": len({leak["image"] for leak in res.leaks}),
                "checked_against": res.leaks_checked_against,
            }
        )
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
    kept_noisy = [s for s in old.get("kept_noisy", []) if keep(s)]
    kept_noisy += [asdict(s) for res in results for s in res.kept_noisy]
    leaks = [item for item in old.get("train_val_leaks", []) if keep(item)]
    leaks += [item for res in results for item in res.leaks or []]
    return {
        "tool": TOOL_NAME,
        "tool_version": TOOL_VERSION,
        "settings": settings,
        "totals": _totals(datasets),
        "datasets": datasets,
        "skipped": skipped,
        "file_errors": file_errors,
        "kept_noisy": kept_noisy,
        "train_val_leaks": leaks,
    }


def _split_rank(split: str) -> int:
    return OUTPUT_SPLITS.index(split) if split in OUTPUT_SPLITS else len(OUTPUT_SPLITS)


def _totals(datasets: dict) -> dict:
    totals: Counter = Counter()
    reasons: Counter = Counter()
    noisy: Counter = Counter()
    for splits in datasets.values():
        for entry in splits.values():
            for key in ("raw", "converted", "skipped"):
                totals[key] += entry.get(key, 0)
            reasons.update(entry.get("skipped_by_reason", {}))
            noisy.update(entry.get("kept_noisy", {}))
            totals["leaked"] += (entry.get("train_val_leaks") or {}).get("records", 0)
    return {
        "raw": totals["raw"],
        "converted": totals["converted"],
        "skipped": totals["skipped"],
        "skipped_by_reason": {r: reasons[r] for r in SKIP_REASONS if reasons[r]},
        "kept_noisy": {r: noisy[r] for r in NOISE_REASONS if noisy[r]},
        "train_val_leak_records": totals["leaked"],
    }


def finding_notes(report: dict) -> list[str]:
    """One line per entry of the last run with data findings: validation records that leak training images,
    noisy records kept under ``--keep_noisy`` (skipped ones are in the summary table)."""
    notes = []
    for dataset, split in (tuple(p) for p in report.get("last_run", {}).get("entries", [])):
        entry = report.get("datasets", {}).get(dataset, {}).get(split, {})
        leaks = entry.get("train_val_leaks")
        if leaks and leaks["records"]:
            notes.append(
                f"{dataset} {split}: {leaks['records']} record(s) show {leaks['images']} image(s) byte-identical "
                "to training images (train_val_leak; evaluate_flare.py --drop_leaked_val leaves them out)"
            )
        for reason, n in entry.get("kept_noisy", {}).items():
            notes.append(f"{dataset} {split}: kept {n} noisy record(s), {reason} (--keep_noisy)")
        for task, vocabulary in (entry.get(RUN_INFO_KEY) or {}).items():
            if vocabulary.get("n_other"):
                notes.append(
                    f"{dataset} {split}: {vocabulary['n_other']} of {vocabulary['n_answers']} {task} answers are "
                    f"not written in option {vocabulary['kind']} like the others (the validator names them)"
                )
    return notes
