"""What each answer may be: its token budget and, with format-guaranteed decoding, its pattern; and the
xgrammar glue that holds every row of a batch to its pattern.

Per record (:class:`AnswerPlanner`):

- **budget**: ``--max_new_tokens`` when given; else, where the record's dataset has a converted training split
  registered (:mod:`qwenvl.data`), the longest training answer of its task type times :data:`BUDGET_MARGIN`,
  plus :data:`BUDGET_SLACK`, measured in UTF-8 bytes when the answer is constrained (every token is at least
  one byte, so a pattern fitted in bytes fits in tokens whatever tokens the model picks; for digits and
  brackets a byte is about a token anyway) and in tokens for free text; else the task type's default
  (``TaskType.max_new_tokens``).
- **pattern**: ``TaskType.answer_pattern(question, hints, max_bytes=budget - 1)``, a bounded regular expression
  (``None`` = free text) fitted to that room but never excluding a form the training answers use. The budget
  is then raised, if need be, to the pattern's longest match + 1 (the end-of-turn token), so a constrained
  answer is never cut mid-structure. The hints are what that training split's answers look like
  (``TaskType.answer_hints``): the letters, labels, separator, instance ids and counts the question does not
  give; for option tasks also the record's answer vocabulary (:func:`answer_vocabulary`: the checkpoint's,
  the converted data's, the question's or the task default), so the pattern admits exactly that vocabulary.

Decoding (:class:`GrammarCache`, :class:`GrammarLogitsProcessor`): each pattern is compiled once by xgrammar
against the tokenizer (vocabulary size from the model config, whose padded vocabulary is what the logits
cover), and every ``generate`` call gets a fresh logits processor with one matcher per row of the left-padded
batch. At each step a constrained row's logits are masked to the tokens that keep its text a prefix of a
match, and to the end-of-turn token once the match is complete; free-text rows are left alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from transformers import LogitsProcessor

from qwenvl.flare.datasets import FLARE_DATASETS, registry_name
from qwenvl.flare.patterns import NO_HINTS, AnswerHints, longest_match_bytes
from qwenvl.flare.runfiles import read_run_info
from qwenvl.flare.schema import BOX_QWEN1000
from qwenvl.flare.tasks import TASKS, normalize_task_type
from qwenvl.flare.vocabulary import (
    META_KEY,
    RULE_CHECKPOINT,
    RULE_CONVERTED,
    RULE_DEFAULT,
    RULE_QUESTION,
    RUN_INFO_KEY,
    AnswerVocabulary,
    read_vocabulary_table,
    recorded_vocabularies,
)

log = logging.getLogger(__name__)

BUDGET_MARGIN = 1.5  # a derived budget is this many times the longest training answer (bytes or tokens)...
BUDGET_SLACK = 16  # ...plus this many tokens
FALLBACK_MAX_NEW_TOKENS = 256  # a record without a known task type


# ---------------------------------------------------------------------------------------------- records
def record_task(record: dict) -> str | None:
    """The normalised task type of a converted record (``meta.task_type``), ``None`` when unknown."""
    meta = record.get("meta")
    return normalize_task_type(meta.get("task_type")) if isinstance(meta, dict) else None


def max_new_tokens_for(task: str | None, override: int | None = None) -> int:
    """The default new-token budget of a task type; ``override`` (a positive int) replaces every task's."""
    if override is not None:
        if override <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {override}")
        return override
    return TASKS[task].max_new_tokens if task in TASKS else FALLBACK_MAX_NEW_TOKENS


def record_question(record: dict) -> str:
    """The record's question: ``meta.question`` (the raw question), else its human turns without image tags."""
    meta = record.get("meta") or {}
    if isinstance(meta.get("question"), str):
        return meta["question"]
    turns = record.get("conversations") or []
    human = [t.get("value", "") for t in turns if t.get("from") == "human"]
    return "\n".join(h.replace("<image>", "").strip() for h in human).strip()


@dataclass(frozen=True)
class TrainingAnswers:
    """The converted training answers (and questions) of one dataset and task type."""

    path: str
    targets: tuple[str, ...]
    questions: tuple[str, ...]


@lru_cache(maxsize=64)
def _read_training_answers(path: str, mtime_ns: int, size: int) -> dict[str, TrainingAnswers]:
    """A converted training file's labelled answers by task type (read again when the file changes)."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning(
            "%s: cannot read its training answers (%s); budgets and answer patterns fall back to the task "
            "defaults. Re-convert it with data_conversion/convert_flare_to_qwen3vl.py",
            path,
            exc,
        )
        records = []
    found: dict[str, tuple[list[str], list[str]]] = {}
    for record in records if isinstance(records, list) else []:
        task = record_task(record) if isinstance(record, dict) else None
        if task is None or not (record.get("meta") or {}).get("has_answer", True):
            continue
        turns = record.get("conversations") or []
        answer = turns[-1].get("value") if turns and isinstance(turns[-1], dict) else None
        if isinstance(answer, str) and answer.strip():
            targets, questions = found.setdefault(task, ([], []))
            targets.append(answer)
            questions.append(record_question(record))
    return {task: TrainingAnswers(path, tuple(t), tuple(q)) for task, (t, q) in found.items()}


def training_answers(record: dict) -> TrainingAnswers | None:
    """The registered training split's answers of the record's dataset and task type (``meta.dataset``,
    ``meta.task_type``), ``None`` when the record names no FLARE dataset, no training split of it is
    registered, or it holds no answer of that task type."""
    from qwenvl import data as registry

    meta = record.get("meta") or {}
    dataset, task = meta.get("dataset"), record_task(record)
    if task is None or dataset not in FLARE_DATASETS:
        return None
    entry = registry.data_dict.get(registry_name(dataset, "train"))
    path = (entry or {}).get("annotation_path")
    if not path or not os.path.isfile(path):
        return None
    stat = os.stat(path)
    return _read_training_answers(os.path.abspath(path), stat.st_mtime_ns, stat.st_size).get(task)


# ----------------------------------------------------------------------------------- answer vocabularies
@lru_cache(maxsize=64)
def _converted_vocabulary(path: str, mtime_ns: int, task: str) -> AnswerVocabulary | None:
    """The vocabulary the converter recorded for ``task`` in the converted training file ``path``
    (``conversion_report.json``), else learnt from its answers the same way."""
    recorded = recorded_vocabularies(path).get(task)
    if recorded is not None:
        return recorded
    answers = _read_training_answers(path, mtime_ns, os.stat(path).st_size).get(task)
    return TASKS[task].learn_vocabulary(answers.targets, answers.questions) if answers else None


def answer_vocabulary(
    record: dict, trained: Mapping[str, Mapping[str, AnswerVocabulary]] | None = None
) -> tuple[AnswerVocabulary, str] | None:
    """``(vocabulary, rule)`` of an option-task record (``None`` for the other task types), the first that
    applies (:mod:`qwenvl.flare.vocabulary`): the one already resolved for it (``meta.answer_vocabulary``,
    with its rule); the checkpoint's for its dataset (``trained``: run_info.json's ``answer_vocabulary``);
    the one recorded for its dataset's converted training split; the question's own instruction; the task
    type's default."""
    task = record_task(record)
    if task is None or not TASKS[task].has_vocabulary:
        return None
    meta = record.get("meta") or {}
    given = meta.get(META_KEY)
    if isinstance(given, dict):
        return AnswerVocabulary.from_record(given), str(given.get("rule", RULE_DEFAULT))
    dataset = str(meta.get("dataset") or (record.get("_source") or {}).get("dataset") or "")
    known = (trained or {}).get(dataset, {}).get(task)
    if known is not None:
        return known, RULE_CHECKPOINT
    answers = training_answers(record)
    if answers is not None:
        converted = _converted_vocabulary(answers.path, os.stat(answers.path).st_mtime_ns, task)
        if converted is not None:
            return converted, RULE_CONVERTED
    question = record_question(record)
    stated = TASKS[task].question_vocabulary(question)
    if stated is not None:
        return stated, RULE_QUESTION
    return TASKS[task].default_vocabulary(question), RULE_DEFAULT


def with_answer_vocabulary(
    records: Sequence[dict], trained: Mapping[str, Mapping[str, AnswerVocabulary]] | None = None
) -> list[dict]:
    """``records`` with each option-task record's vocabulary resolved once (:func:`answer_vocabulary`) and
    written into a copy of its ``meta`` (``answer_vocabulary``: the vocabulary and its ``rule``), so the
    decoding pattern, the written answer and the side files all use the same one."""
    out = []
    for record in records:
        found = answer_vocabulary(record, trained)
        if found is None:
            out.append(record)
            continue
        vocabulary, rule = found
        meta = {**(record.get("meta") or {}), META_KEY: {**vocabulary.as_record(), "rule": rule}}
        out.append({**record, "meta": meta})
    return out


def trained_vocabularies(model_path: str | os.PathLike | None) -> dict[str, dict[str, AnswerVocabulary]]:
    """The answer vocabularies a checkpoint was trained with (its run_info.json), ``{}`` when it records
    none (a base model, a baseline)."""
    if model_path is None:
        return {}
    return read_vocabulary_table(read_run_info(model_path).get(RUN_INFO_KEY), f"{model_path}/run_info.json")


# -------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class AnswerPlan:
    """How one record is answered: the new-token budget (end-of-turn token included), the pattern the answer
    must match (``None`` = free text) and where the budget came from (``argument``, ``training answers
    (bytes)`` or ``(tokens)``, ``task default``; `` + pattern`` when raised to the pattern's longest match)."""

    budget: int
    pattern: str | None
    budget_source: str


class AnswerPlanner:
    """Budget and pattern per record (see the module docstring). ``free_decoding``: no patterns.
    ``max_new_tokens``: one budget for every record. Training answers are read once per file and measured
    once per dataset and task type. ``tokenizer=None``: task defaults instead of budgets derived in tokens."""

    def __init__(
        self, tokenizer: Any, max_new_tokens: int | None = None, free_decoding: bool = False
    ) -> None:
        if max_new_tokens is not None:
            max_new_tokens_for(None, max_new_tokens)  # raises for a non-positive budget
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.free_decoding = free_decoding
        self._longest: dict[tuple[str, str, str], int] = {}
        self._hints: dict[tuple[str, str], AnswerHints] = {}
        self._patterns: dict[tuple[str, str, AnswerHints, int | None], str | None] = {}

    def _pattern(self, task: str, question: str, hints: AnswerHints, max_bytes: int | None) -> str | None:
        key = (task, question, hints, max_bytes)
        if key not in self._patterns:
            self._patterns[key] = TASKS[task].answer_pattern(question, hints, max_bytes=max_bytes)
        return self._patterns[key]

    def constrained(self, record: dict) -> bool:
        """Whether the record's answer is held to a pattern (not free decoding, and its task type has one
        for its question)."""
        task = record_task(record)
        if self.free_decoding or task is None:
            return False
        return self._pattern(task, record_question(record), self.hints(record), None) is not None

    def _longest_answer(self, answers: TrainingAnswers, task: str, unit: str) -> int | None:
        key = (answers.path, task, unit)
        if key not in self._longest:
            if unit == "bytes":
                self._longest[key] = max(len(t.encode("utf-8")) for t in answers.targets)
            elif self.tokenizer is not None:
                ids = self.tokenizer(list(answers.targets), add_special_tokens=False)["input_ids"]
                self._longest[key] = max(len(x) for x in ids)
            else:
                return None
        return self._longest[key]

    def _room_budget(self, record: dict) -> tuple[int, str]:
        """The budget before the pattern is fitted: the argument; else from the longest training answer of
        its dataset and task type, in UTF-8 bytes for a constrained answer (its pattern is fitted in bytes,
        and a byte bound is a token bound whatever tokens the model picks) or in tokens for free text; else
        the task type's default."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens, "argument"
        task = record_task(record)
        answers = training_answers(record) if task is not None else None
        if answers is None or task is None:
            return max_new_tokens_for(task), "task default"
        unit = "bytes" if self.constrained(record) else "tokens"
        longest = self._longest_answer(answers, task, unit)
        if longest is None:
            return max_new_tokens_for(task), "task default"
        return math.ceil(BUDGET_MARGIN * longest) + BUDGET_SLACK, f"training answers ({unit})"

    def budget(self, record: dict) -> tuple[int, str]:
        """``(budget, source)`` of a record: the room budget (:meth:`_room_budget`), raised to the longest
        match of its pattern + 1 when the pattern needs more (source then ends in ``+ pattern``)."""
        plan = self.plan(record)
        return plan.budget, plan.budget_source

    def budget_for(self, record: dict) -> int:
        """The record's new-token budget (what batches are grouped by)."""
        return self.plan(record).budget

    def hints(self, record: dict) -> AnswerHints:
        """What the training answers of the record's dataset and task type say, with the record's box format
        and, for option tasks, its answer vocabulary (:func:`answer_vocabulary`)."""
        task = record_task(record)
        box_format = (record.get("meta") or {}).get("box_format") or BOX_QWEN1000
        found = answer_vocabulary(record)
        vocabulary = found[0] if found is not None else None
        answers = training_answers(record) if task is not None else None
        if answers is None or task is None:
            return replace(NO_HINTS, box_format=box_format, vocabulary=vocabulary)
        key = (answers.path, task)
        if key not in self._hints:
            self._hints[key] = TASKS[task].answer_hints(answers.targets, answers.questions)
        return replace(self._hints[key], box_format=box_format, vocabulary=vocabulary)

    def _fitted_pattern(self, record: dict, budget: int) -> str | None:
        """The record's pattern fitted to a room budget of ``budget`` new tokens, one of which the end-of-turn
        token takes (``None``: free text or free decoding). Use :meth:`plan`: its budget may be larger."""
        if not self.constrained(record):
            return None
        task = record_task(record) or ""
        return self._pattern(task, record_question(record), self.hints(record), budget - 1)

    def plan(self, record: dict) -> AnswerPlan:
        """The record's budget and pattern: the pattern fitted to the room budget, and the budget raised to
        the pattern's longest match + 1 when the pattern needs more."""
        budget, source = self._room_budget(record)
        pattern = self._fitted_pattern(record, budget)
        longest = longest_match_bytes(pattern) if pattern is not None else None
        if longest is not None and longest + 1 > budget:
            budget, source = longest + 1, f"{source} + pattern"
        return AnswerPlan(budget, pattern, source)


# --------------------------------------------------------------------------------------------- xgrammar
def model_vocab_size(model: Any) -> int:
    """The number of logits the model writes per step: its config's (padded) vocabulary size, which is larger
    than the tokenizer's (151,936 against 151,669 for Qwen3-VL)."""
    config = model.config
    size = getattr(config, "vocab_size", None)
    if size is None and getattr(config, "text_config", None) is not None:
        size = getattr(config.text_config, "vocab_size", None)
    if size is None:
        raise ValueError(f"{type(config).__name__} has no vocab_size: cannot size the decoding masks")
    return int(size)


@dataclass
class ConstraintStats:
    """Time spent on constraints: grammar compilation, and masking (matchers + masks) per decoding step."""

    compile_seconds: float = 0.0
    n_compiled: int = 0
    mask_seconds: float = 0.0
    n_steps: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_compiled_grammars": self.n_compiled,
            "compile_ms": round(1000 * self.compile_seconds, 1),
            "n_masked_steps": self.n_steps,
            "mask_ms_per_step": round(1000 * self.mask_seconds / self.n_steps, 3) if self.n_steps else None,
        }


class GrammarCache:
    """xgrammar's compiler for one tokenizer and vocabulary size, and the grammars it compiled, one per
    pattern. ``stop_token_ids``: the tokens that end an answer (``<|im_end|>``, the model's eos)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int]) -> None:
        import xgrammar as xgr

        self.vocab_size = vocab_size
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(set(stop_token_ids))
        )
        self.compiler = xgr.GrammarCompiler(info, max_threads=min(8, os.cpu_count() or 1))
        self.grammars: dict[str, Any] = {}

    def compiled(self, pattern: str, stats: ConstraintStats | None = None) -> Any:
        """The compiled grammar of a pattern (compiled on first use, the time added to ``stats``).
        ``ValueError`` names a pattern xgrammar cannot read."""
        if pattern not in self.grammars:
            t0 = time.perf_counter()
            try:
                self.grammars[pattern] = self.compiler.compile_regex(pattern)
            except RuntimeError as exc:
                raise ValueError(
                    f"xgrammar cannot compile the answer pattern {pattern[:200]!r}: {exc}"
                ) from exc
            if stats is not None:
                stats.compile_seconds += time.perf_counter() - t0
                stats.n_compiled += 1
        return self.grammars[pattern]

    def logits_processor(
        self, patterns: Sequence[str | None], stats: ConstraintStats | None = None
    ) -> GrammarLogitsProcessor | None:
        """A new processor for one ``generate`` call over rows with these patterns; ``None`` when every row
        is free text. Compilation and masking times are added to ``stats``."""
        if all(p is None for p in patterns):
            return None
        grammars = [self.compiled(p, stats) if p is not None else None for p in patterns]
        return GrammarLogitsProcessor(grammars, self.vocab_size, stats)


@lru_cache(maxsize=4)
def grammar_cache(tokenizer: Any, vocab_size: int, stop_token_ids: tuple[int, ...]) -> GrammarCache:
    """One :class:`GrammarCache` per tokenizer, vocabulary size and stop tokens (building xgrammar's
    tokenizer view of a 151k vocabulary takes about a second)."""
    return GrammarCache(tokenizer, vocab_size, stop_token_ids)


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks each constrained row's logits to the tokens its grammar allows (xgrammar matchers, one per row;
    ``None`` rows are free). Used for one ``generate`` call: the first call sees the prompt, each later call
    first feeds every unfinished row's last token to its matcher. A row whose matcher has accepted a stop
    token is finished; generate pads it from then on. The logits are masked in place, as xgrammar's own
    processor does (a copy of a batch of 151,936-wide rows costs more than the masking on a CPU): with
    ``output_logits=True`` generate would return the masked logits of constrained rows."""

    def __init__(
        self, grammars: Sequence[Any], vocab_size: int, stats: ConstraintStats | None = None
    ) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.bitmask = xgr.allocate_token_bitmask(len(self.matchers), vocab_size)
        self.vocab_size = vocab_size
        self.stats = stats if stats is not None else ConstraintStats()
        self._started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        t0 = time.perf_counter()
        if input_ids.shape[0] != len(self.matchers):
            raise RuntimeError(
                f"the constraint was built for {len(self.matchers)} rows, generate passed {input_ids.shape[0]}"
            )
        if self._started:
            last = input_ids[:, -1].tolist()
            for row, matcher in enumerate(self.matchers):
                if (
                    matcher is not None
                    and not matcher.is_terminated()
                    and not matcher.accept_token(last[row])
                ):
                    raise RuntimeError(f"row {row}: token {last[row]} breaks its answer pattern")
        self._started = True
        rows = []
        for row, matcher in enumerate(self.matchers):
            if matcher is not None and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, row)
                rows.append(row)
        if rows:
            mask = self.bitmask.to(scores.device) if scores.device.type == "cuda" else self.bitmask
            if scores.device.type in ("cuda", "cpu"):
                self._xgr.apply_token_bitmask_inplace(scores, mask, indices=rows)
            else:  # other devices: mask on the CPU
                on_cpu = scores.cpu()
                self._xgr.apply_token_bitmask_inplace(on_cpu, mask, indices=rows)
                scores = on_cpu.to(scores.device)
        self.stats.mask_seconds += time.perf_counter() - t0
        self.stats.n_steps += 1
        return scores
