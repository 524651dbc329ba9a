"""Model outputs -> challenge predictions: each generation parsed by its record's task type, written back
into the original raw record (``Answer`` filled in, input order; an option task's answer in its record's answer
vocabulary, :mod:`qwenvl.flare.vocabulary`), and the labelled ones scored against their original raw answers
with :func:`qwenvl.eval.scoring.score_records`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenvl.eval.constrained import answer_vocabulary
from qwenvl.eval.generate import Generation, as_generation, record_task
from qwenvl.eval.scoring import ORGANISERS_FOLDER, score_records
from qwenvl.flare.boxes import format_boxes, record_boxes_to_pixels
from qwenvl.flare.parsing import clean_text
from qwenvl.flare.raw import SPLIT_FOLDERS, QuestionFileError, read_question_file
from qwenvl.flare.schema import BOX_QWEN1000, describe_records
from qwenvl.flare.tasks import TASKS
from qwenvl.flare.vocabulary import META_KEY, AnswerVocabulary, vocabulary_summary

RAW_SPLIT = {"train": "train", "val": "val", "val_hidden": "val", "test": "test"}  # raw ``Split`` values


# ------------------------------------------------------------------------------------- challenge records
class SourceFiles:
    """Raw question files read once each: the original record behind a converted one."""

    def __init__(self) -> None:
        self._files: dict[str, list | None] = {}
        self.n_rebuilt = 0

    def _load(self, path: str) -> list | None:
        if path not in self._files:
            try:
                self._files[path] = read_question_file(path)
            except QuestionFileError:
                self._files[path] = None
        return self._files[path]

    def original(self, meta: dict) -> dict | None:
        """The raw record at ``meta.source_file[meta.source_index]`` when it still has the same ImageName and
        Question, else ``None``."""
        path, index = meta.get("source_file"), meta.get("source_index")
        if not isinstance(path, str) or not isinstance(index, int):
            return None
        data = self._load(path)
        if data is None or not 0 <= index < len(data) or not isinstance(data[index], dict):
            return None
        raw = data[index]
        if raw.get("ImageName") != meta.get("image_name") or raw.get("Question") != meta.get("question"):
            return None
        return dict(raw)

    def challenge_record(self, record: dict) -> dict:
        """The challenge input record of a converted record: the original when readable, else rebuilt from
        ``meta`` (TaskType, Modality, ImageName, Question, Answer, Split)."""
        meta = record.get("meta") or {}
        raw = self.original(meta)
        if raw is not None:
            return raw
        self.n_rebuilt += 1
        return rebuild_raw_record(record)


def rebuild_raw_record(record: dict) -> dict:
    """A raw record from a converted one's ``meta`` (the raw spelling of TaskType and the free-text Modality
    are not kept by the converter: the normalised task type and the modality folder stand in). ``Answer`` is
    the converted answer, with grid boxes mapped back to pixels; ``""`` for inference inputs."""
    meta = record.get("meta") or {}
    if "image_name" not in meta or "question" not in meta:
        src = record.get("_source") or {}
        raise ValueError(
            f"{src.get('file', 'records')}: record {src.get('index', '?')} has no meta.image_name / "
            "meta.question, so its challenge record cannot be rebuilt; re-convert it with "
            "data_conversion/convert_flare_to_qwen3vl.py"
        )
    answer: Any = ""
    if meta.get("has_answer", True):
        answer = reference_answer(record)
    return {
        "TaskType": meta.get("task_type", ""),
        "Modality": meta.get("modality", ""),
        "ImageName": meta["image_name"],
        "Question": meta["question"],
        "Answer": answer,
        "Split": RAW_SPLIT.get(meta.get("split", ""), meta.get("split", "")),
    }


def reference_answer(record: dict) -> Any:
    """The converted record's answer in challenge form (grid boxes back in pixels)."""
    turns = record.get("conversations") or []
    text = turns[-1].get("value", "") if turns else ""
    task = TASKS.get(record_task(record) or "")
    meta = record.get("meta") or {}
    if task is not None and task.has_boxes and meta.get("box_format") == BOX_QWEN1000:
        value = record_boxes_to_pixels(task.parse(text), meta)
        return format_boxes(value) if value is not None else text
    return text


# ---------------------------------------------------------------------------------------------- answers
@dataclass
class Prediction:
    """One record's outcome: the model text, whether it parsed, and the challenge ``Answer`` written."""

    index: int
    dataset: str
    task_type: str | None
    text: str
    answer: Any
    parsed: bool
    n_new_tokens: int = 0
    finished: bool = True
    error: str | None = None
    vocabulary: dict | None = None  # option tasks: the answer vocabulary written in, with its ``rule``
    in_vocabulary: bool | None = None  # option tasks: the written answer is in that vocabulary


def record_vocabulary(record: dict) -> tuple[AnswerVocabulary, str] | None:
    """``(vocabulary, rule)`` an option-task record's answer is written in (resolved once per record:
    :func:`qwenvl.eval.constrained.answer_vocabulary`); ``None`` for the other task types."""
    return answer_vocabulary(record)


def challenge_answer(text: str, record: dict) -> tuple[Any, bool]:
    """``(Answer, parsed)`` for a model text, written by the record's task type (an option answer in the
    record's answer vocabulary, pixel boxes as JSON, a number, the model's own wording...). Text that does not
    parse is written as is (cleaned of special tokens) with ``parsed=False``."""
    name = record_task(record)
    if name is None:
        return clean_text(text), False
    task, meta = TASKS[name], record.get("meta") or {}
    value = task.parse(text, meta.get("question"))
    if value is None:
        return clean_text(text), False
    found = record_vocabulary(record)
    if found is not None:
        meta = {**meta, META_KEY: {**found[0].as_record(), "rule": found[1]}}
    return task.challenge_answer(value, text, meta), True


def in_vocabulary(answer: Any, record: dict) -> bool | None:
    """Whether an option task's written answer is in its record's vocabulary (the evaluation's check on
    predictions: one that parses may still be in another form); ``None`` for the other task types."""
    found = record_vocabulary(record)
    if found is None:
        return None
    return TASKS[record_task(record) or ""].in_vocabulary(
        answer, (record.get("meta") or {}).get("question"), found[0]
    )


def _dataset_of(record: dict) -> str:
    meta = record.get("meta") or {}
    return str(meta.get("dataset") or (record.get("_source") or {}).get("dataset") or "unknown")


def make_predictions(records: Sequence[dict], generations: Sequence[Generation | str]) -> list[Prediction]:
    """Pair each record with its generation and parse it (one :class:`Prediction` per record, in order)."""
    if len(generations) != len(records):
        raise ValueError(f"the generator returned {len(generations)} outputs for {len(records)} records")
    out = []
    for i, (record, raw) in enumerate(zip(records, generations)):
        gen = as_generation(raw)
        answer, parsed = ("", False) if gen.error else challenge_answer(gen.text, record)
        found = record_vocabulary(record)
        out.append(
            Prediction(
                i,
                _dataset_of(record),
                record_task(record),
                gen.text,
                answer,
                parsed,
                gen.n_new_tokens,
                gen.finished,
                gen.error,
                {**found[0].as_record(), "rule": found[1]} if found else None,
                in_vocabulary(answer, record),
            )
        )
    return out


def answer_vocabularies(outputs: Sequence[Prediction]) -> dict[str, dict[str, Any]]:
    """Per ``dataset/task type`` of the option tasks: the vocabulary the answers were written in, the rule
    that chose it and the answers not in it (:func:`qwenvl.flare.vocabulary.vocabulary_summary`)."""
    return vocabulary_summary(
        (p.dataset, str(p.task_type), p.vocabulary, p.in_vocabulary) for p in outputs if p.vocabulary
    )


# ------------------------------------------------------------------------------------------------ results
def _group_key(p: Prediction, multi_task: set[str]) -> str:
    return f"{p.dataset}/{p.task_type}" if p.dataset in multi_task else p.dataset


def count_by_dataset(outputs: Sequence[Prediction]) -> dict[str, dict[str, int]]:
    """Per dataset (``dataset/task`` for datasets with several task types): records, unparsable answers,
    failed records (inputs that could not be loaded; also unparsable) and answers cut at the token budget."""
    tasks: dict[str, set] = {}
    for p in outputs:
        tasks.setdefault(p.dataset, set()).add(p.task_type)
    multi = {d for d, t in tasks.items() if len(t) > 1}
    counts: dict[str, Counter] = {}
    for p in outputs:
        c = counts.setdefault(_group_key(p, multi), Counter())
        c["n"] += 1
        c["n_unparsable"] += not p.parsed
        c["n_failed"] += p.error is not None
        c["n_truncated"] += p.error is None and not p.finished
    return {
        k: {key: c[key] for key in ("n", "n_unparsable", "n_failed", "n_truncated")}
        for k, c in counts.items()
    }


def write_raw_outputs(path: Path, records: Sequence[dict], outputs: Sequence[Prediction]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record, p in zip(records, outputs):
            meta = record.get("meta") or {}
            line = {
                "index": p.index,
                "dataset": p.dataset,
                "task_type": p.task_type,
                "image_name": meta.get("image_name"),
                "question": meta.get("question"),
                "output": p.text,
                "parsed": p.parsed,
                "answer": p.answer,
                "n_new_tokens": p.n_new_tokens,
                "finished": p.finished,
                "error": p.error,
            }
            if p.vocabulary is not None:
                line["vocabulary"] = p.vocabulary
                line["in_vocabulary"] = p.in_vocabulary
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def ground_truth_pairs(
    records: Sequence[dict], predictions: Sequence[dict], sources: SourceFiles
) -> list[tuple[str, dict]]:
    """``(dataset, raw record with its answer)`` for the labelled records, in input order."""
    pairs = []
    for record, pred in zip(records, predictions):
        meta = record.get("meta") or {}
        if not meta.get("has_answer", False):
            continue
        raw = sources.original(meta)
        if raw is None or raw.get("Answer") in (None, ""):
            raw = {**pred, "Answer": reference_answer(record)}
        pairs.append((_dataset_of(record), raw))
    return pairs


def validation_public_of(records: Sequence[dict]) -> list[Path]:
    """The ``validation-public`` folders (that exist) of the raw trees ``records`` were converted from: the
    sibling of the split folder above each ``meta.source_file``, in first-seen order."""
    found: dict[Path, None] = {}
    for record in records:
        source = (record.get("meta") or {}).get("source_file")
        if not isinstance(source, str):
            continue
        for parent in Path(source).parents:
            if parent.name in SPLIT_FOLDERS.values():
                found.setdefault(parent.parent / ORGANISERS_FOLDER, None)
                break
    return [folder for folder in found if folder.is_dir()]


def record_sources(records: Sequence[dict]) -> dict[str, int]:
    """Labelled records per raw folder they came from (``validation-public``, ``validation-hidden _withGT``)."""
    return describe_records([r for r in records if (r.get("meta") or {}).get("has_answer", False)])["folders"]


@dataclass
class Scored:
    """Parsed outputs, challenge-format predictions and (for labelled records) metrics of one generation."""

    outputs: list[Prediction]
    predictions: list[dict]
    metrics: dict | None
    n_labelled: int
    n_rebuilt: int


def score_generations(records: Sequence[dict], generations: Sequence[Generation | str]) -> Scored:
    """Parse each generation for its record, build the challenge predictions (original raw records with
    ``Answer`` filled in, input order) and score the labelled records with
    :func:`qwenvl.eval.scoring.score_records` against their original raw answers (``metrics`` is ``None``
    when no record carries an answer)."""
    outputs = make_predictions(records, generations)
    sources = SourceFiles()
    predictions = [
        {**sources.challenge_record(record), "Answer": p.answer} for record, p in zip(records, outputs)
    ]
    gt = ground_truth_pairs(records, predictions, sources)
    metrics = score_records(gt, predictions) if gt else None
    return Scored(outputs, predictions, metrics, len(gt), sources.n_rebuilt)
