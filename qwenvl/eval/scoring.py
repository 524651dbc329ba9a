"""Score FLARE25 challenge-format predictions against raw ground-truth question files.

Predictions are the challenge's input records with ``Answer`` filled in (one JSON list). They are matched to
ground truth on (``ImageName``, ``Question``); a list-valued ``ImageName`` is compared through its JSON text.
Boxes are original-image pixels on both sides. Metrics per task type and per dataset; see ``docs/metrics.md``
for the output schema, the definitions and the policy for missing and unparsable predictions.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenvl.flare import metrics as M
from qwenvl.flare.raw import (
    REQUIRED_RAW_FIELDS,
    SPLIT_FOLDERS,
    QuestionFileError,
    is_empty_answer,
    read_question_file,
    record_key,
)
from qwenvl.flare.tasks import TASK_TYPES, TASKS, normalize_task_type

log = logging.getLogger(__name__)

# (references, hypotheses) -> one GREEN score per report (None where the judge gave no usable answer).
GreenFn = Callable[[list[str], list[str | None]], list[float | None]]

# ---------------------------------------------------------------------------------------------------------
# Record access
# ---------------------------------------------------------------------------------------------------------


def default_task_type_of(record: dict) -> str | None:
    """Normalised task type of a raw record (``TaskType``), or ``None`` when it is not a FLARE25 type."""
    return normalize_task_type(record.get("TaskType"))


def default_dataset_of(record: dict) -> str:
    """Dataset of a bare record: its ``dataset`` field, else ``meta.dataset``, else ``"unknown"``."""
    meta = record.get("meta")
    return str(
        record.get("dataset") or (meta.get("dataset") if isinstance(meta, dict) else None) or "unknown"
    )


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------

_QUESTION_FILE_RE = re.compile(r"^(?P<dataset>.+)_questions_[^/]*\.json$")


def _read_json_list(path: Path) -> list:
    try:
        return read_question_file(path)
    except QuestionFileError as exc:
        raise ValueError(f"{exc}; fix or remove the file") from exc


def _is_question_file(path: Path, data: Any) -> bool:
    """A question file is named ``<dataset>_questions_*.json`` or is a JSON list holding at least one object
    with ``TaskType`` and ``Question`` (the ``IU_XRay_all_val.json`` variant). Its records are then checked
    strictly; anything else (reports, configs) is not ground truth."""
    if _QUESTION_FILE_RE.match(path.name):
        return True
    return isinstance(data, list) and any(
        isinstance(r, dict) and "TaskType" in r and "Question" in r for r in data
    )


def _labelled_records(path: Path, data: list, dataset: str) -> list[tuple[str, dict]]:
    """The answered records of one question file; unanswered ones are skipped with a warning."""
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: record {i} is a {type(record).__name__}, not an object; fix the file")
        missing = [f for f in REQUIRED_RAW_FIELDS if f not in record]
        if missing:
            raise ValueError(
                f"{path}: record {i} lacks {', '.join(missing)}; every ground-truth record needs "
                f"{', '.join(REQUIRED_RAW_FIELDS)} (fix the record or remove it)"
            )
    out = [(dataset, r) for r in data if not is_empty_answer(r["Answer"])]
    if len(out) < len(data):
        log.warning(
            "%s: skipped %d of %d records with an empty Answer", path, len(data) - len(out), len(data)
        )
    return out


def _dataset_from_file_name(path: Path) -> str:
    m = _QUESTION_FILE_RE.match(path.name)
    if m:
        return m.group("dataset")
    log.warning(
        "%s: name is not <dataset>_questions_<split>.json; using folder name %r", path, path.parent.name
    )
    return path.parent.name


def _tree_question_files(root: Path) -> list[Path]:
    """All ``*.json`` files under ``root``, where ``X_withGT.json`` replaces ``X.json`` in the same folder."""
    files = sorted(p for p in root.rglob("*.json") if p.is_file())
    with_gt = {p.with_name(p.name.replace("_withGT.json", ".json")) for p in files if "_withGT" in p.name}
    kept = [p for p in files if p not in with_gt]
    for p in sorted(set(files) - set(kept)):
        log.info("%s: using the _withGT copy beside it", p)
    return kept


def load_ground_truth(path: str | Path) -> list[tuple[str, dict]]:
    """Raw FLARE question records with answers, as ``(dataset, record)`` pairs, in file order.

    ``path`` is one question file (dataset from ``<dataset>_questions_*.json``, else the folder name) or a
    tree searched for ``*.json`` (dataset = the file's folder name; ``X_withGT.json`` preferred over
    ``X.json``; JSON files that are not question lists, such as reports, are skipped with a warning). Files
    whose answers are all empty (hidden validation, test inputs) are skipped with a warning; records with an
    empty answer inside labelled files too. Point it at one split (``validation-public``), not the whole
    raw root: several splits at once are warned about. Raises ``FileNotFoundError`` / ``ValueError`` with the
    file (and record) at fault, and ``ValueError`` when no answered record is found.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"ground truth not found: {root}")
    if root.is_file():
        records = _labelled_records(root, _read_json_list(root), _dataset_from_file_name(root))
    else:
        splits = {p.name for p in root.rglob("*") if p.is_dir() and p.name in SPLIT_FOLDERS.values()}
        if len(splits) > 1:
            log.warning("%s holds several splits (%s): all are used as ground truth", root, sorted(splits))
        records = []
        for file in _tree_question_files(root):
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                if _QUESTION_FILE_RE.match(file.name):
                    raise ValueError(f"{file}: not readable JSON ({exc}); fix or remove the file") from exc
                data = None
            if not _is_question_file(file, data):
                log.warning("%s: not a raw FLARE question file; skipped", file)
                continue
            if not isinstance(data, list):
                raise ValueError(f"{file}: expected a JSON list of question records")
            if data and all(isinstance(r, dict) and is_empty_answer(r.get("Answer")) for r in data):
                log.warning("%s: every Answer is empty (an inference input); skipped", file)
                continue
            records.extend(_labelled_records(file, data, file.parent.name))
    if not records:
        raise ValueError(
            f"{root}: no answered ground-truth records; use validation-public or the _withGT files "
            "(hidden-validation and test inputs carry empty answers)"
        )
    return records


def load_predictions(path: str | Path) -> list[dict]:
    """A predictions file: a JSON list of records, each with at least ``ImageName`` and ``Question``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    data = _read_json_list(path)
    _check_predictions(data, str(path))
    return data


def _check_predictions(preds: Sequence[Any], where: str = "predictions") -> None:
    for i, rec in enumerate(preds):
        if not isinstance(rec, dict) or "ImageName" not in rec or "Question" not in rec:
            raise ValueError(
                f"{where}: record {i} has no ImageName/Question; predictions must be the challenge input "
                "records with Answer filled in"
            )


# ---------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ScoredItem:
    """One ground-truth record with its parsed answers (``pred`` is ``None`` when missing or unparsable)."""

    dataset: str
    task: str
    gt: Any
    pred: Any
    missing: bool
    green: float | None = None  # per-report GREEN score, only when a GREEN judge was run


def _parse_gt(record: dict, task: str) -> Any:
    return TASKS[task].parse_reference(record["Answer"], record.get("Question"))


def _pair_predictions(
    gt_items: list[tuple[str, str, dict]], preds: Sequence[dict]
) -> tuple[list[dict | None], dict[str, int]]:
    """For each ground-truth item, its prediction (``None`` if missing), plus counts.

    Records sharing a key are paired in order; if a key has fewer predictions than ground-truth records the
    last prediction is reused for the rest (``n_reused_predictions``), surplus predictions are extras."""
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for rec in preds:
        by_key[record_key(rec)].append(rec)
    used: dict[tuple[str, str], int] = defaultdict(int)
    paired: list[dict | None] = []
    reused = 0
    for _, _, rec in gt_items:
        key = record_key(rec)
        candidates = by_key.get(key, [])
        k = used[key]
        used[key] += 1
        if not candidates:
            paired.append(None)
        elif k < len(candidates):
            paired.append(candidates[k])
        else:
            paired.append(candidates[-1])
            reused += 1
    extra = sum(max(0, len(v) - used.get(k, 0)) for k, v in by_key.items())
    return paired, {"n_extra_predictions": extra, "n_reused_predictions": reused}


def _group(items: Sequence[ScoredItem], task: str, with_green: bool) -> dict[str, Any]:
    return {
        "n": len(items),
        **TASKS[task].metrics(
            [it.gt for it in items],
            [it.pred for it in items],
            [it.green for it in items] if with_green else None,
        ),
        "n_unparsable": sum(1 for it in items if it.pred is None),
        "n_missing": sum(1 for it in items if it.missing),
    }


def _as_gt_items(
    gt_records: Iterable[tuple[str, dict] | dict], dataset_of: Callable[[dict], str]
) -> list[tuple[str, dict]]:
    out = []
    for i, item in enumerate(gt_records):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
            dataset, record = item
        elif isinstance(item, dict):
            dataset, record = dataset_of(item), item
        else:
            raise ValueError(f"ground truth item {i} is neither a record nor a (dataset, record) pair")
        missing = [f for f in REQUIRED_RAW_FIELDS if f not in record]
        if missing:
            raise ValueError(f"ground truth item {i} ({dataset}) lacks {', '.join(missing)}")
        out.append((str(dataset), record))
    return out


def score_records(
    gt_records: Iterable[tuple[str, dict] | dict],
    pred_records: Sequence[dict],
    task_type_of: Callable[[dict], str | None] = default_task_type_of,
    dataset_of: Callable[[dict], str] = default_dataset_of,
    green_fn: GreenFn | None = None,
) -> dict[str, Any]:
    """Score challenge-format predictions against ground truth.

    ``gt_records``: ``(dataset, record)`` pairs as ``load_ground_truth`` returns them, or bare raw records
    (dataset from ``dataset_of``). ``pred_records``: raw records with ``Answer`` filled in. The task type
    comes from the ground-truth record (``task_type_of``). A ground-truth record without a prediction is
    scored as unparsable (wrong) and counted in ``n_missing_predictions``; predictions matching no
    ground truth are counted in ``n_extra_predictions`` and otherwise ignored. Ground-truth records with an
    unknown task type or an unparsable answer are skipped, counted in ``n_gt_skipped`` and logged.
    ``green_fn(references, hypotheses) -> [score or None per report]`` is called once, on all
    report_generation items, only when given (see ``metrics.green_scores``); groups then get ``green`` (mean
    of the usable scores) and ``green_n_failed``. Returns the schema documented in ``docs/metrics.md``.
    """
    _check_predictions(pred_records)
    gt_items: list[tuple[str, str, dict]] = []
    n_gt_skipped = 0
    for i, (dataset, record) in enumerate(_as_gt_items(gt_records, dataset_of)):
        task = task_type_of(record)
        if task not in TASK_TYPES:
            log.warning(
                "ground truth %d (%s): unknown TaskType %r; skipped", i, dataset, record.get("TaskType")
            )
            n_gt_skipped += 1
            continue
        gt_items.append((dataset, task, record))
    paired, counts = _pair_predictions(gt_items, pred_records)

    items: list[ScoredItem] = []
    missing_keys = []
    for (dataset, task, record), pred in zip(gt_items, paired):
        gt_value = _parse_gt(record, task)
        if gt_value is None:
            log.warning(
                "ground truth (%s, %s): unparsable %s answer %.80r; skipped",
                dataset,
                record_key(record)[0],
                task,
                record["Answer"],
            )
            n_gt_skipped += 1
            continue
        if pred is None:
            missing_keys.append(record_key(record))
        pred_value = None if pred is None else TASKS[task].parse(pred.get("Answer"), record.get("Question"))
        items.append(ScoredItem(dataset, task, gt_value, pred_value, pred is None))
    if missing_keys:
        log.warning(
            "%d ground-truth records have no prediction (scored as wrong), e.g. %s",
            len(missing_keys),
            missing_keys[:3],
        )
    if counts["n_extra_predictions"]:
        log.warning("%d predictions match no ground-truth record (ignored)", counts["n_extra_predictions"])
    reports = [it for it in items if TASKS[it.task].judged]
    if green_fn is not None and reports:
        scores = green_fn([it.gt for it in reports], [it.pred for it in reports])
        if len(scores) != len(reports):
            raise ValueError(f"green_fn returned {len(scores)} scores for {len(reports)} reports")
        for it, score in zip(reports, scores):
            it.green = score
    return _assemble(items, counts, n_gt_skipped, green_fn is not None)


def _assemble(
    items: list[ScoredItem], counts: dict[str, int], n_gt_skipped: int, with_green: bool
) -> dict[str, Any]:
    by_task_items: dict[str, list[ScoredItem]] = defaultdict(list)
    by_ds_items: dict[tuple[str, str], list[ScoredItem]] = defaultdict(list)
    for it in items:
        by_task_items[it.task].append(it)
        by_ds_items[(it.dataset, it.task)].append(it)
    tasks_per_ds: dict[str, set[str]] = defaultdict(set)
    for dataset, task in by_ds_items:
        tasks_per_ds[dataset].add(task)

    by_task = {t: _group(by_task_items[t], t, with_green) for t in TASK_TYPES if t in by_task_items}
    by_dataset = {}
    for (dataset, task), group in sorted(by_ds_items.items()):
        name = dataset if len(tasks_per_ds[dataset]) == 1 else f"{dataset}/{task}"
        by_dataset[name] = {"dataset": dataset, "task_type": task, **_group(group, task, with_green)}
    result: dict[str, Any] = {
        "by_task": by_task,
        "by_dataset": by_dataset,
        "n_gt": len(items),
        "n_matched": sum(1 for it in items if not it.missing),
        "n_missing_predictions": sum(1 for it in items if it.missing),
        "n_extra_predictions": counts["n_extra_predictions"],
        "n_reused_predictions": counts["n_reused_predictions"],
        "n_gt_skipped": n_gt_skipped,
        "notes": [TASKS[t].note for t in by_task if TASKS[t].note],
    }
    return result


def score_files(
    predictions: str | Path, ground_truth: str | Path, green_model: str | Path | None = None
) -> dict[str, Any]:
    """``score_records`` on a predictions file and a ground-truth file or tree; with ``green_model`` (a
    local folder) report groups also get the GREEN score."""
    green_fn: GreenFn | None = None
    if green_model is not None:
        model_dir = Path(green_model).expanduser()
        if not model_dir.is_dir():
            raise FileNotFoundError(f"--green_model {model_dir}: not a local model folder")

        def green_fn(refs: list[str], hyps: list[str | None]) -> list[float | None]:
            return M.green_scores(refs, hyps, str(model_dir))

    return score_records(load_ground_truth(ground_truth), load_predictions(predictions), green_fn=green_fn)


# ---------------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A metric value as it is shown in tables: 4 decimals, ``n/a`` for a missing value."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """Markdown tables: one per task type, with an ``all`` row and one row per dataset."""
    lines = [
        "# FLARE25 scores",
        "",
        f"Ground-truth records scored: {metrics['n_gt']}; with a prediction: {metrics['n_matched']}; "
        f"missing predictions (scored as wrong): {metrics['n_missing_predictions']}; extra predictions "
        f"(ignored): {metrics['n_extra_predictions']}; ground truth skipped: {metrics.get('n_gt_skipped', 0)}.",
    ]
    for task, overall in metrics["by_task"].items():
        cols = [c for c in TASKS[task].metric_columns if c in overall]
        header = ["scope", "n", *cols, "n_unparsable", "n_missing"]
        lines += ["", f"## {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        rows = [("**all**", overall)] + [
            (name, g) for name, g in metrics["by_dataset"].items() if g["task_type"] == task
        ]
        for name, group in rows:
            lines.append("| " + " | ".join([name] + [format_value(group.get(c)) for c in header[1:]]) + " |")
        if TASKS[task].note:
            lines += ["", f"_{TASKS[task].note}_"]
    return "\n".join(lines) + "\n"
