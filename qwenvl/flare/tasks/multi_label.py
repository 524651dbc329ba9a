"""Multi-label classification: the answer is a set of labels (or option letters); scored by micro F1."""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from qwenvl.flare import metrics as M
from qwenvl.flare.answers import answer_text
from qwenvl.flare.parsing import clean_text, collapse, parse_options
from qwenvl.flare.patterns import (
    NO_HINTS,
    AnswerHints,
    Rx,
    alt,
    item_order,
    joined,
    lit,
    merge_order,
    most_repeats,
    ordered_subset,
)
from qwenvl.flare.tasks.base import TaskType

_ANSWER_PREFIX_RE = re.compile(
    r"^(?i:(?:the\s+)?(?:final\s+)?(?:answers?|labels?|findings?)\s*(?:is|are)?\s*:?\s*)(?=\S)"
)
_ITEM_STRIP = " \t\n\"'`*\u2022"


_PURE_LETTER_RE = re.compile(r"^[(\[]?([A-Za-z])[)\]:.]?$")
_LETTERED_TEXT_RE = re.compile(r"^[(\[]?[A-Za-z][)\]:.]\s+(\S.*)$", re.DOTALL)


def _label_of(item: str, options: dict[str, str]) -> str:
    """One multi-label item as a lower-cased label. An option letter (``B``, ``(B)``, ``B.``) or a lettered
    text (``B: Nodule``) becomes that option's text when the question lists it; otherwise a bare letter stays
    the letter and a lettered text keeps its text. ``A normal finding`` is a label, not a letter."""
    m = _PURE_LETTER_RE.match(item)
    if m:
        letter = m.group(1).upper()
        return collapse(options[letter]) if letter in options else letter.lower()
    m = _LETTERED_TEXT_RE.match(item)
    if m:
        letter = item.lstrip("([")[0].upper()
        return collapse(options[letter]) if letter in options else collapse(m.group(1))
    return collapse(item)


def _multilabel_items(answer: str) -> list[str]:
    """Split a multi-label text into items: a list literal is decoded; otherwise one enclosing ``[...]`` is
    dropped and the text split on ``;``, ``,`` and line breaks."""
    text = _ANSWER_PREFIX_RE.sub("", clean_text(answer))
    if text.startswith("[") and text.endswith("]"):
        for decode in (json.loads, ast.literal_eval):
            try:
                value = decode(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, list):
                return [str(v) for v in value]
        text = text[1:-1]
    return re.split(r"[;,\n]", text)


def parse_multilabel(answer: object, options: dict[str, str] | None = None) -> set[str] | None:
    """The set of labels of a multi-label answer, or ``None`` when it names none.

    The answer is split on ``;``, ``,`` and line breaks (never on spaces: ``pleural effusion`` is one label);
    each item is stripped of whitespace, quotes, brackets, bullets and a final full stop, and lower-cased.
    When the question lists options, an item that is an option letter (``B``, ``(B)``, ``B: Nodule``) becomes
    that option's text, so letters and label names compare equal. A JSON list of strings is read as such; a
    leading ``Answer:`` / ``Labels:`` is dropped.
    """
    if answer is None or isinstance(answer, bool):
        return None
    options = options or {}
    if isinstance(answer, (list, tuple, set)):
        items = [str(a) for a in answer]
    else:
        items = _multilabel_items(str(answer))
    labels = set()
    for item in items:
        item = item.strip(_ITEM_STRIP)
        item = re.sub(r"^[-+]\s+", "", item).rstrip(". ")
        if item:
            labels.add(_label_of(item, options))
    return labels or None


# ------------------------------------------------------------------------------ the decoding constraint
_SEPARATOR_RE = re.compile(r"\s*[;,\n]\s*")
_UNLETTERED_OPTIONS_RE = re.compile(r"\b[Oo]ptions?\s*:\s*(.+?)(?:\.(?=\s|$)|\n|$)")
MAX_FREE_LABELS = 8  # labels in one answer when neither the question nor the training answers name any
# A label the model makes up when none is known: a letter, then up to 39 label characters (no separator).
_FREE_LABEL = Rx("[A-Za-z][A-Za-z0-9 ()'/-]{0,39}", 1, 40)


def target_items(target: str) -> list[str]:
    """The labels of a training target, in order (split on ``;``, ``,`` and line breaks, stripped)."""
    return [item for item in (i.strip() for i in _SEPARATOR_RE.split(target)) if item]


def offered_labels(question: str | None, as_letters: bool = False) -> list[str]:
    """The labels a question offers: its lettered options' texts (their letters with ``as_letters``), else
    the comma- or semicolon-separated list after ``Options:`` up to the end of that sentence."""
    options = parse_options(question)
    if options:
        return list(options) if as_letters else list(options.values())
    m = _UNLETTERED_OPTIONS_RE.search(question or "")
    if not m:
        return []
    items = re.split(r"\s*[;,]\s*(?:(?:and|or)\s+)?|\s+(?:and|or)\s+", m.group(1))
    return [item.strip() for item in items if item.strip()]


def _separator_of(question: str | None) -> str:
    return ";" if question and "semicolon" in question.lower() else ", "


class MultiLabel(TaskType):
    name = "multi-label classification"
    metric_columns = ("f1", "precision", "recall", "tp", "fp", "fn")
    main_metric = "f1"
    max_new_tokens = 64

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return answer_text(answer)

    def answer_hints(self, targets: Sequence[str], questions: Sequence[str] = ()) -> AnswerHints:
        answers = [target_items(t) for t in targets]
        asked = Counter(q for q in questions if q).most_common(1)
        labels, ordered = item_order([a for a in answers if a], offered_labels(asked[0][0]) if asked else ())
        separators = Counter(m.group(0) for t in targets for m in _SEPARATOR_RE.finditer(t.strip()))
        return AnswerHints(
            labels=labels,
            ordered=ordered,
            separator=separators.most_common(1)[0][0] if separators else None,
            max_items=max((len(a) for a in answers), default=0),
            n_answers=len(targets),
        )

    def answer_pattern(
        self, question: str | None, hints: AnswerHints = NO_HINTS, max_bytes: int | None = None
    ) -> str | None:
        """A non-empty set of labels joined by the training answers' separator: the labels the training
        answers use plus those the question offers (option letters when the training answers are letters).
        When every training answer keeps one order (or there are none): each label at most once, in that
        order, which bounds the answer by itself. Otherwise any labels, as many as fit ``max_bytes`` but
        never fewer than a training answer holds. Without known labels: up to 8 made-up labels."""
        as_letters = bool(hints.labels) and all(re.fullmatch(r"[A-Z]", x) for x in hints.labels)
        labels = merge_order(hints.labels, offered_labels(question, as_letters), key=collapse)
        sep = lit(hints.separator or _separator_of(question))
        items = [lit(x) for x in labels]
        if items and (hints.ordered or not hints.n_answers):
            return ordered_subset(items, sep).text
        item = alt(items) if items else _FREE_LABEL
        cap = len(items) if items else MAX_FREE_LABELS
        room = max_bytes if max_bytes is not None else 10**9
        n = most_repeats(room, 0, item.longest, sep.longest, cap)
        return joined(item, sep, 1, max(1, n, min(hints.max_items, cap))).text

    def parse(self, answer: object, question: str | None = None) -> set[str] | None:
        return parse_multilabel(answer, parse_options(question))

    def metrics(self, gts: Sequence[Any], preds: Sequence[Any], green=None) -> dict[str, Any]:
        return M.multilabel_micro_f1(gts, preds)

    reward_note = "F1 of the answer's label set against the reference set (the challenge's F1 on one sample)"

    def reward(
        self, value: Any, reference: Any, question: str | None = None, *, iou_threshold: float = 0.5
    ) -> float:
        """The challenge's F1 (:func:`~qwenvl.flare.metrics.multilabel_micro_f1`) on this one sample:
        ``2 TP / (2 TP + FP + FN)`` over labels, option letters read as their option's text."""
        if value is None:
            return 0.0
        return float(M.multilabel_micro_f1([reference], [value])["f1"])


TASK = MultiLabel()
