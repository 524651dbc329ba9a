"""The console summary of a conversion report: a rich table and one note per thing worth saying.

Both read a ``conversion_report.json`` dict (:mod:`data_conversion.report`) and nothing else; by default they
show the entries the report's last run wrote.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence

from rich.table import Table

from qwenvl.flare.schema import (
    SKIP_CORRUPT_IMAGE,
    SKIP_DUPLICATE,
    SKIP_EMPTY_ANSWER,
    SKIP_INVALID_RECORD,
    SKIP_MISSING_IMAGE,
    SKIP_REASONS,
    SKIP_UNKNOWN_TASK,
    SKIP_UNPARSABLE_ANSWER,
)
from qwenvl.flare.vocabulary import RUN_INFO_KEY

# Column headings of the skip reasons (a reason not listed is shown as itself).
_SHORT = {
    SKIP_MISSING_IMAGE: "missing img",
    SKIP_CORRUPT_IMAGE: "corrupt img",
    SKIP_EMPTY_ANSWER: "empty ans",
    SKIP_DUPLICATE: "duplicate",
    SKIP_UNKNOWN_TASK: "unknown task",
    SKIP_INVALID_RECORD: "invalid",
    SKIP_UNPARSABLE_ANSWER: "unparsable",
}


def _summary_rows(report: dict, pairs: Iterable[Sequence[str]] | None) -> list[tuple[str, str, dict]]:
    wanted = pairs if pairs is not None else report.get("last_run", {}).get("entries", [])
    datasets = report.get("datasets", {})
    return [(d, s, datasets[d][s]) for d, s in (tuple(p) for p in wanted) if s in datasets.get(d, {})]


def summary_table(report: dict, pairs: Iterable[Sequence[str]] | None = None) -> Table:
    """A rich table of raw / converted / skipped (by reason) per dataset and split; ``pairs`` limits it to
    those (dataset, split) entries (default: the last run's)."""
    rows = _summary_rows(report, pairs)
    reasons = [r for r in SKIP_REASONS if any(e["skipped_by_reason"].get(r) for _, _, e in rows)]
    table = Table(title="FLARE25 -> Qwen3-VL conversion")
    table.add_column("dataset", no_wrap=True)
    table.add_column("split", no_wrap=True)
    for col in ("raw", "converted", "skipped", *(_SHORT.get(r, r) for r in reasons)):
        table.add_column(col, justify="right")
    sums: Counter = Counter()
    for dataset, split, e in rows:
        counts = [
            e["raw"],
            e["converted"],
            e["skipped"],
            *(e["skipped_by_reason"].get(r, 0) for r in reasons),
        ]
        sums.update(dict(enumerate(counts)))
        style = "yellow" if e.get("file_errors") or e.get("output_file") is None else None
        table.add_row(dataset, split, *(str(c) for c in counts), style=style)
    if rows:
        table.add_section()
        table.add_row("total", "", *(str(sums[i]) for i in range(3 + len(reasons))))
    return table


def summary_notes(report: dict, pairs: Iterable[Sequence[str]] | None = None) -> list[str]:
    """One line per entry with something to say: file errors, absent folders, ignored answers, no output
    written."""
    notes = []
    for dataset, split, e in _summary_rows(report, pairs):
        items = [f"{err['reason']}: {err['detail']}" for err in e.get("file_errors", [])]
        items += [f"no folder {p}" for p in e.get("missing_folders", [])]
        if e.get("answers_ignored"):
            items.append(f"{e['answers_ignored']} non-empty answers ignored (inference inputs)")
        if e.get("output_file") is None:
            items.append("no output file written")
        notes += [f"{dataset} {split}: {item}" for item in items]
    return notes


def vocabulary_table(report: dict, pairs: Iterable[Sequence[str]] | None = None) -> Table | None:
    """A rich table of the answer vocabulary of each option-task dataset (``answer_vocabulary`` of its train
    entry, else of its val entry) among ``pairs`` (default: the last run's entries); ``None`` when there is
    none."""
    rows = [(d, s, e) for d, s, e in _summary_rows(report, pairs) if e.get(RUN_INFO_KEY)]
    with_train = {d for d, s, _ in rows if s == "train"}
    rows = [(d, s, e) for d, s, e in rows if s == "train" or d not in with_train]
    if not rows:
        return None
    table = Table(title="Answer vocabulary of the option tasks (what evaluation and submission answer in)")
    for col in ("dataset", "split", "task type", "answers", "kind", "separator", "case", "other form"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("answers", "other form") else "left")
    for dataset, split, e in rows:
        for task, v in e[RUN_INFO_KEY].items():
            separator = json.dumps(v["separator"]) if v.get("separator") is not None else "-"
            table.add_row(
                dataset, split, task, str(v["n_answers"]), v["kind"], separator, v["case"], str(v["n_other"])
            )
    return table
