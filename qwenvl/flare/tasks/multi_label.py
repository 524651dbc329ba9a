"""Multi-label classification: the answer is a set of labels (or option letters); scored by micro F1."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from typing import Any

from qwenvl.flare import metrics as M
from qwenvl.flare.answers import answer_text
from qwenvl.flare.parsing import clean_text, collapse, parse_options
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


class MultiLabel(TaskType):
    name = "multi-label classification"
    metric_columns = ("f1", "precision", "recall", "tp", "fp", "fn")
    main_metric = "f1"
    max_new_tokens = 64

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return answer_text(answer)

    def parse(self, answer: object, question: str | None = None) -> set[str] | None:
        return parse_multilabel(answer, parse_options(question))

    def metrics(self, gts: Sequence[Any], preds: Sequence[Any], green=None) -> dict[str, Any]:
        return M.multilabel_micro_f1(gts, preds)


TASK = MultiLabel()
