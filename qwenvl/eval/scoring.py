"""Score FLARE25 challenge-format predictions against raw ground-truth question files.

Predictions are the challenge's input records with ``Answer`` filled in (one JSON list). Two record sets:

- the **headline** (:func:`score_organisers`): exactly the records the organisers' evaluation script scores,
  by its rules: every record of every ``*.json`` under ``validation-public`` (:func:`load_organisers_ground_truth`),
  one per (``ImageName``, ``Question``) as its dictionary keeps them (the last of duplicates), predictions
  matched on the same key (the last of duplicates), ground truth without a prediction left out of the score
  and counted loudly;
- the toolkit's (:func:`score_records`): given ground-truth records, all scored, duplicates paired in order,
  a missing prediction scored as wrong (a converted split, the ``_withGT`` files: extra tables, never merged
  into the headline).

Boxes are original-image pixels on both sides. Metrics per task type and per dataset; see ``docs/metrics.md``
for the output schema, the definitions and the policy for missing and unparsable predictions.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
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
from qwenvl.flare.vocabulary import VocabularyEntry, vocabulary_findings

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
    if counts["n_extra_predictions"]:
        log.warning("%d predictions match no ground-truth record (ignored)", counts["n_extra_predictions"])
    return _score_pairs(
        [(*item, pred) for item, pred in zip(gt_items, paired)], counts, n_gt_skipped, green_fn
    )


def _score_pairs(
    pairs: list[tuple[str, str, dict, dict | None]],
    counts: dict[str, int],
    n_gt_skipped: int,
    green_fn: GreenFn | None,
) -> dict[str, Any]:
    """The metrics of ``(dataset, task, ground-truth record, prediction or None)`` pairs: each reference and
    answer read by its task type, references that do not parse skipped (counted into ``n_gt_skipped``), a
    missing prediction scored as wrong; GREEN through ``green_fn`` when given."""
    items: list[ScoredItem] = []
    missing_keys = []
    vocabulary: list[VocabularyEntry] = []
    for dataset, task, record, pred in pairs:
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
        pred_value = (
            None if pred is None else TASKS[task].read_answer(pred.get("Answer"), record.get("Question"))
        )
        items.append(ScoredItem(dataset, task, gt_value, pred_value, pred is None))
        vocabulary += _vocabulary_entry(dataset, task, record, pred)
    if missing_keys:
        log.warning(
            "%d ground-truth records have no prediction (scored as wrong), e.g. %s",
            len(missing_keys),
            missing_keys[:3],
        )
    reports = [it for it in items if TASKS[it.task].judged]
    if green_fn is not None and reports:
        scores = green_fn([it.gt for it in reports], [it.pred for it in reports])
        if len(scores) != len(reports):
            raise ValueError(f"green_fn returned {len(scores)} scores for {len(reports)} reports")
        for it, score in zip(reports, scores):
            it.green = score
    return _with_vocabulary_findings(_assemble(items, counts, n_gt_skipped, green_fn is not None), vocabulary)


def _vocabulary_entry(dataset: str, task: str, record: dict, pred: dict | None) -> list[VocabularyEntry]:
    """The vocabularies of an option task's reference and answer (``[]`` for the other task types)."""
    if not TASKS[task].has_vocabulary or pred is None:
        return []
    t, question = TASKS[task], record.get("Question")
    kinds = (t.answer_kind(record["Answer"], question), t.answer_kind(pred.get("Answer"), question))
    return [VocabularyEntry(dataset, task, *kinds)]


def _with_vocabulary_findings(result: dict[str, Any], entries: list[VocabularyEntry]) -> dict[str, Any]:
    """``result`` with ``vocabulary_findings`` (how each option dataset's references and answers are written,
    :func:`qwenvl.flare.vocabulary.vocabulary_findings`) and a note for each dataset whose answers are in
    another vocabulary than their references. The scores are the challenge's, unchanged."""
    findings = vocabulary_findings(entries)
    result["vocabulary_findings"] = findings
    result["notes"] = [*result.get("notes", []), *(f["note"] for f in findings if "note" in f)]
    for f in findings:
        if "note" in f:
            log.warning("%s", f["note"])
    return result


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


# ---------------------------------------------------------------------------------------------------------
# The headline: the organisers' record set and rules
# ---------------------------------------------------------------------------------------------------------

ORGANISERS_FOLDER = SPLIT_FOLDERS["val"]  # validation-public: the one folder the organisers' script reads
ORGANISERS = "organisers"  # record_set["rules"] of a headline (score_organisers)
TOOLKIT = "toolkit"  # record_set["rules"] of the toolkit's record sets (score_records)


def organisers_key(record: dict) -> tuple[str, str]:
    """The key the organisers' evaluation script matches records by: ``ImageName`` (else ``image``, else
    empty) and ``Question``, each as Python's ``str()`` writes it: the exact text, nothing trimmed, a list of
    images as ``['a.png', 'b.png']`` (so their order matters)."""
    return str(record.get("ImageName", record.get("image", ""))), str(record.get("Question", ""))


def organisers_folder(path: str | Path) -> Path:
    """The folder the headline reads for ``path``: ``path`` itself, or its ``validation-public`` child when it
    has one (the raw root, which the organisers' script takes as ``--base_dataset_path``)."""
    root = Path(path).expanduser()
    if root.is_dir() and root.name != ORGANISERS_FOLDER and (root / ORGANISERS_FOLDER).is_dir():
        return root / ORGANISERS_FOLDER
    return root


@dataclass
class OrganisersGroundTruth:
    """Everything the organisers' script reads as ground truth: each item of each ``*.json`` file below the
    ``roots`` (a file holding one object gives that object), in reading order (sorted paths), with its
    dataset (the file's folder name)."""

    roots: list[Path]
    records: list[tuple[str, Any]] = field(default_factory=list)
    n_files: int = 0
    unreadable: list[str] = field(default_factory=list)  # "<file>: <why>", skipped with a warning


def load_organisers_ground_truth(paths: str | Path | Sequence[str | Path]) -> OrganisersGroundTruth:
    """The headline's ground truth: every ``*.json`` below each path (:func:`organisers_folder`: a raw root
    stands for its ``validation-public``; a single question file is read alone), as the organisers' script
    reads it: files that are not JSON are skipped with a warning (its own behaviour), nothing is filtered
    here (:func:`score_organisers` applies the rules). Paths are read in sorted order, so of two records of
    one key the later file's wins (``X_withGT.json`` after ``X.json``); the organisers' script reads in the
    file system's order. Raises ``FileNotFoundError`` for a missing path or a folder without JSON files."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    truth = OrganisersGroundTruth([organisers_folder(p) for p in items])
    for root in truth.roots:
        if not root.exists():
            raise FileNotFoundError(f"ground truth not found: {root}")
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*.json") if p.is_file())
        if not files:
            raise FileNotFoundError(f"{root}: no JSON files (expected the raw tree's {ORGANISERS_FOLDER})")
        if root.is_dir() and root.name != ORGANISERS_FOLDER:
            log.warning(
                "%s is not a %s folder: the organisers' rules on other records than theirs",
                root,
                ORGANISERS_FOLDER,
            )
        for file in files:
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                log.warning(
                    "%s: not readable JSON (%s); skipped, as the organisers' script skips it", file, exc
                )
                truth.unreadable.append(f"{file}: {exc}")
                continue
            truth.n_files += 1
            dataset = _dataset_from_file_name(file) if root.is_file() else file.parent.name
            truth.records += [(dataset, item) for item in (data if isinstance(data, list) else [data])]
    return truth


def score_organisers(
    ground_truth: OrganisersGroundTruth,
    pred_records: Sequence[dict],
    green_fn: GreenFn | None = None,
    expected_missing: bool = False,
) -> dict[str, Any]:
    """The headline: ``pred_records`` scored on exactly the records the organisers' evaluation script scores,
    by its rules (``docs/metrics.md``, "The headline"):

    - ground truth and predictions are each keyed by :func:`organisers_key`; of several records (or
      predictions) with one key the last is kept (``n_duplicate_gt_keys``, ``n_duplicate_prediction_keys``);
    - a kept record without a ``TaskType`` (empty, or an item that is no record, as in a report JSON) is not
      scored (``n_no_task_type``); the task type is its ``TaskType`` stripped and lower-cased, one not among
      the seven is skipped (``n_unknown_task_type``); a record with an empty ``Answer`` is not labelled and
      skipped (``n_unlabelled``; none in the published ``validation-public``);
    - a record without a prediction is **left out of the score** (the organisers' "unmatched samples"):
      ``n_missing_predictions``, per dataset in ``record_set.missing_by_dataset``, per group ``n_left_out``,
      with a warning (a submission that lacks them loses them); ``expected_missing`` (an evaluation of a
      chosen subset) logs it as information instead;
    - a prediction of a key the ground truth lacks is ignored (``n_extra_predictions``).

    The metrics are the scoring library's (the same as :func:`score_records`); the result's ``record_set``
    names the rules, the folders and these counts."""
    _check_predictions(pred_records)
    gt_by_key: dict[tuple[str, str], tuple[str, dict]] = {}
    n_objects = n_no_task_type = 0
    for dataset, item in ground_truth.records:
        if not isinstance(item, dict):
            n_no_task_type += 1
            continue
        n_objects += 1
        gt_by_key[organisers_key(item)] = (dataset, item)
    pred_by_key = {organisers_key(rec): rec for rec in pred_records}
    pairs: list[tuple[str, str, dict, dict | None]] = []
    missing: dict[tuple[str, str], int] = defaultdict(int)
    unknown: dict[str, int] = defaultdict(int)
    n_unlabelled = 0
    for key, (dataset, record) in gt_by_key.items():
        raw_type = record.get("TaskType")
        if not isinstance(raw_type, str) or not raw_type.strip():
            n_no_task_type += 1
            continue
        task = raw_type.strip().lower()
        if task not in TASK_TYPES:
            unknown[raw_type] += 1
            continue
        if is_empty_answer(record.get("Answer")):
            n_unlabelled += 1
            continue
        pred = pred_by_key.get(key)
        if pred is None:
            missing[(dataset, task)] += 1
            continue
        pairs.append((dataset, task, record, pred))
    n_extra = sum(1 for key in pred_by_key if key not in gt_by_key)
    roots = ", ".join(str(r) for r in ground_truth.roots)
    if unknown:
        log.warning("%s: records of unknown task types, not scored: %s", roots, dict(unknown))
    if n_unlabelled:
        log.warning("%s: %d records with an empty Answer are not labelled: not scored", roots, n_unlabelled)
    if n_no_task_type:
        log.warning(
            "%s: %d items without a TaskType (not question records): not scored", roots, n_no_task_type
        )
    if n_extra:
        log.warning("%d predictions match no record of %s (ignored)", n_extra, roots)
    n_dup_gt, n_dup_pred = n_objects - len(gt_by_key), len(pred_records) - len(pred_by_key)
    if n_dup_gt or n_dup_pred:
        log.warning(
            "keys (ImageName, Question) shared by several records: the last one kept, as the organisers' script "
            "keeps it: %d ground-truth records and %d predictions not used",
            n_dup_gt,
            n_dup_pred,
        )
    counts = {"n_extra_predictions": n_extra, "n_reused_predictions": 0}
    result = _score_pairs(pairs, counts, sum(unknown.values()), green_fn)
    result["n_gt_skipped"] += n_unlabelled
    by_dataset: dict[str, int] = defaultdict(int)
    for (dataset, _), n in missing.items():
        by_dataset[dataset] += n
    listed: dict[str, int] = defaultdict(int)  # left out of the groups that are scored, per task type
    for group in result["by_dataset"].values():
        group.pop("n_missing", None)
        group["n_left_out"] = missing.get((group["dataset"], group["task_type"]), 0)
        listed[group["task_type"]] += group["n_left_out"]
    for task, group in result["by_task"].items():
        group.pop("n_missing", None)
        group["n_left_out"] = listed[task]
    scored_datasets = {g["dataset"] for g in result["by_dataset"].values()}
    result["n_missing_predictions"] = sum(missing.values())
    result["record_set"] = {
        "rules": ORGANISERS,
        "title": "the organisers' record set",
        "ground_truth": [str(r) for r in ground_truth.roots],
        "missing_predictions": "left out",
        "n_files": ground_truth.n_files,
        "unreadable_files": ground_truth.unreadable,
        "n_records_read": len(ground_truth.records),
        "n_duplicate_gt_keys": n_dup_gt,
        "n_duplicate_prediction_keys": n_dup_pred,
        "n_no_task_type": n_no_task_type,
        "n_unknown_task_type": sum(unknown.values()),
        "n_unlabelled": n_unlabelled,
        "missing_by_dataset": dict(sorted(by_dataset.items())),
        "datasets_without_predictions": sorted(set(by_dataset) - scored_datasets),
    }
    if missing:
        log.log(
            logging.INFO if expected_missing else logging.WARNING,
            "%d ground-truth records of %s have no prediction: left out of the headline score, as the "
            "organisers' script leaves them out (a submission without them loses them): %s",
            result["n_missing_predictions"],
            roots,
            missing_text(result["record_set"]),
        )
    return result


def missing_text(record_set: dict[str, Any], limit: int = 6) -> str:
    """``retino 42, BUSI-det 8; 14 datasets without any prediction (fundus 48, ...)``: the headline's
    left-out records, in the datasets it scores, then the datasets it does not score at all."""

    def listing(items: list[tuple[str, int]]) -> str:
        items = sorted(items, key=lambda kv: (-kv[1], kv[0]))
        text = ", ".join(f"{name} {n}" for name, n in items[:limit])
        return text + (f" and {len(items) - limit} more" if len(items) > limit else "")

    missing = record_set.get("missing_by_dataset", {})
    absent = set(record_set.get("datasets_without_predictions", []))
    parts = []
    partly = [(d, n) for d, n in missing.items() if d not in absent]
    if partly:
        parts.append("in the datasets scored: " + listing(partly))
    if absent:
        parts.append(
            f"{len(absent)} datasets without any prediction: " + listing([(d, missing[d]) for d in absent])
        )
    return "; ".join(parts)


def toolkit_record_set(metrics: dict[str, Any], title: str, **details: Any) -> dict[str, Any]:
    """``metrics`` (of :func:`score_records`) labelled as a toolkit record set: ``record_set`` with the rules,
    a ``title`` for its table and ``details`` (ground truth, sources...)."""
    metrics["record_set"] = {
        "rules": TOOLKIT,
        "title": title,
        "missing_predictions": "scored as wrong",
        **details,
    }
    return metrics


def score_files(
    predictions: str | Path,
    ground_truth: str | Path,
    green_model: str | Path | None = None,
    extra_ground_truth: str | Path | None = None,
) -> dict[str, Any]:
    """What ``score_predictions.py`` prints: the headline (:func:`score_organisers` on ``ground_truth``, the
    raw tree's ``validation-public`` or the tree itself) and, with ``extra_ground_truth`` (e.g. a folder of
    ``_withGT`` files), the toolkit's scores on it under ``extra``. With ``green_model`` (a local folder)
    report groups also get the GREEN score."""
    green_fn: GreenFn | None = None
    if green_model is not None:
        model_dir = Path(green_model).expanduser()
        if not model_dir.is_dir():
            raise FileNotFoundError(f"--green_model {model_dir}: not a local model folder")

        def green_fn(refs: list[str], hyps: list[str | None]) -> list[float | None]:
            return M.green_scores(refs, hyps, str(model_dir))

    preds = load_predictions(predictions)
    headline = score_organisers(load_organisers_ground_truth(ground_truth), preds, green_fn=green_fn)
    if extra_ground_truth is not None:
        extra = score_records(load_ground_truth(extra_ground_truth), preds, green_fn=green_fn)
        headline["extra"] = toolkit_record_set(
            extra, f"the answered records of {extra_ground_truth}", ground_truth=[str(extra_ground_truth)]
        )
    return headline


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


def _headline_lines(metrics: dict[str, Any]) -> list[str]:
    rs = metrics["record_set"]
    roots = ", ".join(f"`{r}`" for r in rs.get("ground_truth", []))
    n_missing = metrics["n_missing_predictions"]
    if n_missing:
        missing = (
            f"**Ground truth without a prediction: {n_missing} records: left out of these scores as the "
            "organisers' script leaves them out; a submission without them loses them** "
            f"({missing_text(rs)})."
        )
    else:
        missing = "Every ground-truth record has a prediction."
    return [
        "# Headline: FLARE25 scores on the organisers' record set",
        "",
        f"The records and rules of the organisers' evaluation script: every record under {roots}, one per "
        "(ImageName, Question) with the last of duplicates kept, predictions matched on that key (the last "
        f"of duplicates). Scored: {metrics['n_gt']} records. {missing} Extra predictions (ignored): "
        f"{metrics['n_extra_predictions']}. Duplicate keys, the last kept: ground truth "
        f"{rs.get('n_duplicate_gt_keys', 0)}, predictions {rs.get('n_duplicate_prediction_keys', 0)}. Not "
        f"scored: {rs.get('n_no_task_type', 0)} without a task type, {metrics.get('n_gt_skipped', 0)} skipped "
        "(unknown task type, no answer, an unreadable reference)." + _other_predictions_text(rs),
    ]


def _other_predictions_text(rs: dict[str, Any]) -> str:
    n, shared = rs.get("n_predictions_other_folders"), rs.get("n_predictions_other_folders_sharing_keys")
    if not n:
        return ""
    text = f" Predictions of records from other folders (the extra table's), not used here: {n}"
    if shared:
        text += (
            f"; **{shared} share their key with a record here**, so the organisers' script given every "
            "prediction would score those records with the later answer, about another image"
        )
    return text + "."


def _toolkit_lines(metrics: dict[str, Any]) -> list[str]:
    rs = metrics.get("record_set") or {}
    counts = (
        f"Ground-truth records scored: {metrics['n_gt']}; with a prediction: {metrics['n_matched']}; "
        f"missing predictions (scored as wrong): {metrics['n_missing_predictions']}; extra predictions "
        f"(ignored): {metrics['n_extra_predictions']}; ground truth skipped: {metrics.get('n_gt_skipped', 0)}."
    )
    if "title" not in rs:
        return ["# FLARE25 scores", "", counts]
    lines = [f"# Extra: FLARE25 scores on {rs['title']}", ""]
    if rs.get("no_headline"):
        lines += [f"**No headline**: {rs['no_headline']}", ""]
    lines.append(
        "Not the organisers' record set: the toolkit's rules (every record scored, records sharing a key "
        f"paired in order, a missing prediction scored as wrong). {counts}"
    )
    return lines


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """Markdown of one record set: a title and its counts (the headline's, :func:`score_organisers`, or an
    extra one's), then one table per task type, with an ``all`` row and one row per dataset."""
    headline = (metrics.get("record_set") or {}).get("rules") == ORGANISERS
    lines = _headline_lines(metrics) if headline else _toolkit_lines(metrics)
    missing_column = "n_left_out" if headline else "n_missing"
    for task, overall in metrics["by_task"].items():
        cols = [c for c in TASKS[task].metric_columns if c in overall]
        header = ["scope", "n", *cols, "n_unparsable", missing_column]
        lines += ["", f"## {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        rows = [("**all**", overall)] + [
            (name, g) for name, g in metrics["by_dataset"].items() if g["task_type"] == task
        ]
        for name, group in rows:
            lines.append("| " + " | ".join([name] + [format_value(group.get(c)) for c in header[1:]]) + " |")
        if TASKS[task].note:
            lines += ["", f"_{TASKS[task].note}_"]
    return "\n".join(lines) + "\n"


def main_scores(metrics: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{scope: (n, main metric value)}`` per task type (``all <task>``) and per dataset group, values
    rounded to 9 decimals (the same records summed in another order are the same score)."""
    out: dict[str, tuple[Any, Any]] = {}
    for section, prefix in (("by_task", "all "), ("by_dataset", "")):
        for name, group in metrics.get(section, {}).items():
            task = TASKS.get(name if section == "by_task" else group.get("task_type", ""))
            if task is not None:
                value = group.get(task.main_metric)
                out[prefix + name] = (group.get("n"), round(value, 9) if isinstance(value, float) else value)
    return out


def scores_markdown(metrics: dict[str, Any]) -> str:
    """The headline's tables first, then the extra record set's (``metrics["extra"]``), or one sentence when
    it scores exactly as the headline does, group by group (same record counts, same main metrics)."""
    text = metrics_markdown(metrics)
    extra = metrics.get("extra")
    if not extra:
        return text
    if main_scores(extra) == main_scores(metrics):
        title = (extra.get("record_set") or {}).get("title", "the extra record set")
        return (
            text
            + f"\n# Extra: FLARE25 scores on {title}\n\nThe same number of records in every group as the "
            "headline, with the same scores: the tables are not repeated.\n"
        )
    return text + "\n" + metrics_markdown(extra)
