"""The answer vocabulary of an option task: how one dataset writes its labelled answers, learnt once and carried.

The challenge compares an answer with its reference as text: a classification answer as its normalised string,
a multi-label answer as the set of its ``;``- or ``,``-separated labels, stripped and lower-cased. So an answer
is only right in the reference's own vocabulary: ``Effusion, Cardiomegaly`` scores 0 against ``B, C`` however
right it is. Each dataset's option tasks (classification, multi-label classification) therefore have an
:class:`AnswerVocabulary`:

- ``kind``: option ``letters`` (``B``, ``B, C``), option ``texts`` (``effusion; cardiomegaly``) or ``numbers``;
- ``separator``: what joins the labels of a multi-label answer, spacing included (``", "``, ``";"``);
- ``case``: ``upper`` / ``lower`` (letters or texts written in one case) or ``as written`` (texts as the
  question's options write them).

Where it comes from, in order (the ``rule`` named per record in the predictions' side files):

1. ``checkpoint``: the checkpoint's ``run_info.json`` (``answer_vocabulary``, every dataset it was trained on);
2. ``converted data``: the dataset's converted training split, as the converter recorded it in
   ``conversion_report.json`` (learnt from the labelled answers: :meth:`TaskType.learn_vocabulary`);
3. ``question``: the question's own instruction (``Separate letters with commas``, ``answer with the letter``,
   ``give the label names``): :func:`stated_kind`, :func:`stated_separator`;
4. ``task default``: the task type's default (classification: letters; multi-label: option texts).

This module holds the vocabulary itself, the instruction rules, the run_info / report records and the findings
of the scorer; what an answer of each kind looks like is the task types' (:mod:`qwenvl.flare.tasks.options`).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LETTERS = "letters"
TEXTS = "texts"
NUMBERS = "numbers"
KINDS = (LETTERS, TEXTS, NUMBERS)

UPPER = "upper"
LOWER = "lower"
AS_WRITTEN = "as written"
CASES = (UPPER, LOWER, AS_WRITTEN)

RULE_CHECKPOINT = "checkpoint"  # the checkpoint's run_info.json
RULE_CONVERTED = "converted data"  # the dataset's converted training split (conversion_report.json)
RULE_QUESTION = "question"  # the question's own instruction
RULE_DEFAULT = "task default"  # the task type's default
RULES = (RULE_CHECKPOINT, RULE_CONVERTED, RULE_QUESTION, RULE_DEFAULT)

CONVERSION_REPORT = "conversion_report.json"  # beside the converted files (data_conversion/report.py)
RUN_INFO_KEY = "answer_vocabulary"  # run_info.json's key, and the conversion report entries' key
META_KEY = "answer_vocabulary"  # a record's resolved vocabulary (``meta``), with its ``rule``


@dataclass(frozen=True)
class AnswerVocabulary:
    """How one dataset writes the answers of one option task type (see the module docstring).

    ``n_answers``: the labelled answers it was learnt from (0: not learnt, a rule); ``n_other``: those of them
    written in another form (a dataset whose answers mix letters and texts)."""

    kind: str = LETTERS
    separator: str | None = None
    case: str = UPPER
    n_answers: int = 0
    n_other: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"answer vocabulary kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.case not in CASES:
            raise ValueError(f"answer vocabulary case {self.case!r}: expected one of {', '.join(CASES)}")

    def as_record(self) -> dict[str, Any]:
        """The JSON form (conversion report, run_info.json, ``meta``)."""
        return {
            "kind": self.kind,
            "separator": self.separator,
            "case": self.case,
            "n_answers": self.n_answers,
            "n_other": self.n_other,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AnswerVocabulary:
        """Read :meth:`as_record`'s form back; ``ValueError`` names a field that is not one."""
        try:
            return cls(
                kind=str(record.get("kind", LETTERS)),
                separator=record.get("separator"),
                case=str(record.get("case", UPPER)),
                n_answers=int(record.get("n_answers") or 0),
                n_other=int(record.get("n_other") or 0),
            )
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"not an answer vocabulary: {record!r} ({exc})") from exc

    def describe(self) -> str:
        """``letters, ", "-separated, upper case`` (a report line)."""
        parts = [self.kind]
        if self.separator is not None:
            parts.append(f"{json.dumps(self.separator)}-separated")
        parts.append(f"{self.case} case" if self.case != AS_WRITTEN else "case as the options write it")
        return ", ".join(parts)

    def cased(self, text: str) -> str:
        """``text`` in this vocabulary's case."""
        if self.case == UPPER:
            return text.upper()
        if self.case == LOWER:
            return text.lower()
        return text


# ------------------------------------------------------------------------------------- a question's rule
_LETTER_WORDS_RE = re.compile(r"\b(?:option\s+|choice\s+|answer\s+)?letters?\b", re.IGNORECASE)
_TEXT_WORDS_RE = re.compile(
    r"\b(?:(?:label|option|finding|class|category|diagnosis|condition)s?\s+(?:names?|texts?)|"
    r"(?:names?|texts?)\s+of\s+the\s+(?:options?|labels?|findings?|classes)|"
    r"(?:full|exact)\s+(?:option\s+|label\s+)?(?:names?|texts?))\b",
    re.IGNORECASE,
)
_NUMBER_WORDS_RE = re.compile(
    r"\b(?:answer|respond|reply)\s+with\s+(?:an?|the|one)?\s*(?:number|integer)\b", re.I
)
_SEPARATOR_WORDS = ((re.compile(r"\bsemi-?colons?\b", re.I), ";"), (re.compile(r"\bcommas?\b", re.I), ", "))


def stated_kind(question: str | None) -> str | None:
    """The kind of answer the question asks for, when it says so: ``letters`` (``Separate letters with
    commas``, ``Answer with the option letter``), ``texts`` (``give the label names``, ``the full option
    text``), ``numbers`` (``Answer with a number``); ``None`` when it states none (or states two)."""
    if not question:
        return None
    found = [
        kind
        for kind, rx in ((LETTERS, _LETTER_WORDS_RE), (TEXTS, _TEXT_WORDS_RE), (NUMBERS, _NUMBER_WORDS_RE))
        if rx.search(question)
    ]
    return found[0] if len(found) == 1 else None


def stated_separator(question: str | None) -> str | None:
    """The separator the question asks for (``separated by semicolons``: ``";"``, ``commas``: ``", "``), or
    ``None``."""
    for rx, separator in _SEPARATOR_WORDS:
        if question and rx.search(question):
            return separator
    return None


# ----------------------------------------------------------------------------- the record of a dataset
def vocabulary_table(vocabularies: Mapping[str, Mapping[str, AnswerVocabulary]]) -> dict[str, dict]:
    """``{dataset: {task type: vocabulary record}}`` (run_info.json's ``answer_vocabulary``)."""
    return {d: {t: v.as_record() for t, v in sorted(by_task.items())} for d, by_task in vocabularies.items()}


def read_vocabulary_table(table: Any, where: str = "run_info.json") -> dict[str, dict[str, AnswerVocabulary]]:
    """:func:`vocabulary_table`'s form read back (``{}`` for a missing or malformed table, with a warning
    naming ``where`` for the malformed part)."""
    out: dict[str, dict[str, AnswerVocabulary]] = {}
    if not isinstance(table, Mapping):
        if table is not None:
            log.warning("%s: %s is not a table of datasets; ignored", where, RUN_INFO_KEY)
        return out
    for dataset, by_task in table.items():
        if not isinstance(by_task, Mapping):
            continue
        for task, record in by_task.items():
            try:
                out.setdefault(str(dataset), {})[str(task)] = AnswerVocabulary.from_record(record)
            except ValueError as exc:
                log.warning("%s: %s of %s / %s ignored: %s", where, RUN_INFO_KEY, dataset, task, exc)
    return out


@lru_cache(maxsize=32)
def _report_entries(path: str, mtime_ns: int) -> dict[tuple[str, str], dict]:
    """``{(dataset, split): entry}`` of a conversion report (``{}`` when unreadable)."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    datasets = report.get("datasets") if isinstance(report, dict) else None
    if not isinstance(datasets, dict):
        return {}
    return {
        (name, split): entry
        for name, splits in datasets.items()
        if isinstance(splits, dict)
        for split, entry in splits.items()
        if isinstance(entry, dict)
    }


def recorded_vocabularies(converted_file: str | Path) -> dict[str, AnswerVocabulary]:
    """``{task type: vocabulary}`` the converter recorded for one converted file (its entry in the
    ``conversion_report.json`` beside it, matched by ``output_file``); ``{}`` when no report covers it."""
    path = Path(converted_file).expanduser().resolve()
    report = path.parent / CONVERSION_REPORT
    if not report.is_file():
        return {}
    for entry in _report_entries(str(report), report.stat().st_mtime_ns).values():
        if entry.get("output_file") == str(path):
            return read_vocabulary_table({"file": entry.get(RUN_INFO_KEY) or {}}, str(report)).get("file", {})
    return {}


def record_dataset(record: Mapping[str, Any]) -> str:
    """The dataset a converted record belongs to: ``meta.dataset`` (the FLARE25 folder name, what evaluation
    and submission records carry), else the registry name of ``_source``."""
    meta = record.get("meta") or {}
    return str(meta.get("dataset") or (record.get("_source") or {}).get("dataset") or "records")


def training_vocabularies(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, AnswerVocabulary]]:
    """``{dataset: {task type: vocabulary}}`` of labelled converted records (what run_info.json's
    ``answer_vocabulary`` holds for the datasets a run trains on): for each dataset and option task type, the
    vocabulary the converter recorded for the records' file (``conversion_report.json`` beside
    ``_source.file``), else learnt from these records' answers the same way."""
    from qwenvl.flare.tasks import TASKS, normalize_task_type  # the task modules import this one

    groups: dict[tuple[str, str], tuple[set[str], list[str], list[str | None]]] = {}
    for record in records:
        meta = record.get("meta") or {}
        task = normalize_task_type(meta.get("task_type"))
        turns = record.get("conversations") or []
        if task is None or not TASKS[task].has_vocabulary or not turns or meta.get("has_answer") is False:
            continue
        files, targets, questions = groups.setdefault((record_dataset(record), task), (set(), [], []))
        source = (record.get("_source") or {}).get("file")
        if source:
            files.add(str(source))
        targets.append(str(turns[-1].get("value", "")))
        questions.append(meta.get("question"))
    out: dict[str, dict[str, AnswerVocabulary]] = {}
    for (dataset, task), (files, targets, questions) in sorted(groups.items()):
        recorded = next((v for f in sorted(files) if (v := recorded_vocabularies(f).get(task))), None)
        vocabulary = recorded or TASKS[task].learn_vocabulary(targets, questions)
        if vocabulary is not None:
            out.setdefault(dataset, {})[task] = vocabulary
    return out


# --------------------------------------------------------------------------------------------- findings
@dataclass(frozen=True)
class VocabularyEntry:
    """One scored answer of an option task: its dataset, task type, and the kinds of its reference and of
    its answer (``None``: in no vocabulary of the question, e.g. free text)."""

    dataset: str
    task: str
    reference_kind: str | None
    answer_kind: str | None


def vocabulary_findings(entries: Iterable[VocabularyEntry]) -> list[dict[str, Any]]:
    """Per dataset and option task type: how its references and its answers are written, and how many answers
    are in another vocabulary than their reference (``n_other_vocabulary``: option texts against letters or
    the other way round, which the challenge scores 0), with a one-line ``note`` when there are any. The
    scores are never changed: this only says why they are what they are."""
    groups: dict[tuple[str, str], list[VocabularyEntry]] = {}
    for entry in entries:
        groups.setdefault((entry.dataset, entry.task), []).append(entry)
    out = []
    for (dataset, task), items in sorted(groups.items()):
        references = Counter(str(e.reference_kind) for e in items)
        answers = Counter(str(e.answer_kind) for e in items)
        crossed = [
            e for e in items if e.reference_kind and e.answer_kind and e.reference_kind != e.answer_kind
        ]
        finding: dict[str, Any] = {
            "dataset": dataset,
            "task_type": task,
            "n": len(items),
            "references": dict(references.most_common()),
            "answers": dict(answers.most_common()),
            "n_other_vocabulary": len(crossed),
        }
        if crossed:
            pairs = Counter((e.answer_kind, e.reference_kind) for e in crossed).most_common(1)[0][0]
            finding["note"] = (
                f"{dataset} ({task}): {len(crossed)} of {len(items)} answers are option {pairs[0]} where the "
                f"reference uses option {pairs[1]}; the challenge compares the texts, so they score 0 however "
                "right they are: answer in the dataset's vocabulary"
            )
        out.append(finding)
    return out


def vocabulary_summary(
    answers: Iterable[tuple[str, str, Mapping[str, Any], bool | None]],
) -> dict[str, dict[str, Any]]:
    """Per ``dataset/task type`` of a run's option-task answers ``(dataset, task type, vocabulary record with
    its rule, whether the answer is in it)``: the vocabulary, the rule that chose it (``mixed`` when records
    differ), the records, and those whose answer is not in it (``n_out_of_vocabulary``: unparsable text, a
    label no option names). What an evaluation's ``summary.json`` and a submission's summary list."""
    out: dict[str, dict[str, Any]] = {}
    for dataset, task, vocabulary, inside in answers:
        key = f"{dataset}/{task}"
        entry = out.setdefault(key, {**vocabulary, "n": 0, "n_out_of_vocabulary": 0})
        if entry.get("rule") != vocabulary.get("rule"):
            entry["rule"] = "mixed"
        entry["n"] += 1
        entry["n_out_of_vocabulary"] += inside is False
    return out


__all__ = [
    "AS_WRITTEN",
    "CASES",
    "CONVERSION_REPORT",
    "KINDS",
    "LETTERS",
    "LOWER",
    "META_KEY",
    "NUMBERS",
    "RULES",
    "RULE_CHECKPOINT",
    "RULE_CONVERTED",
    "RULE_DEFAULT",
    "RULE_QUESTION",
    "RUN_INFO_KEY",
    "TEXTS",
    "UPPER",
    "AnswerVocabulary",
    "VocabularyEntry",
    "record_dataset",
    "read_vocabulary_table",
    "recorded_vocabularies",
    "training_vocabularies",
    "stated_kind",
    "stated_separator",
    "vocabulary_findings",
    "vocabulary_summary",
    "vocabulary_table",
]
