"""Multi-label classification: the answer is a set of labels, written in the dataset's vocabulary (option texts
or option letters, its separator); scored by micro F1 on the challenge's reading of the labels."""

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
    alt,
    chars,
    item_order,
    joined,
    lit,
    merge_order,
    most_repeats,
    ordered_subset,
)
from qwenvl.flare.tasks.base import FALLBACK_TEXT
from qwenvl.flare.tasks.options import DEFAULT_SEPARATOR, FREE_LABEL, SEPARATOR_RE, OptionTask, offered
from qwenvl.flare.vocabulary import LETTERS, LOWER, TEXTS, AnswerVocabulary

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
    that option's text: this reads what a model meant, to write its answer in the dataset's vocabulary
    (:meth:`MultiLabel.render`); scores compare the challenge's reading instead
    (:meth:`~qwenvl.flare.tasks.options.OptionTask.read_answer`), where a letter never equals a text. A JSON
    list of strings is read as such; a leading ``Answer:`` / ``Labels:`` is dropped.
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
MAX_FREE_LABELS = 8  # labels in one answer when neither the question nor the training answers name any


def target_items(target: str) -> list[str]:
    """The labels of a training target, in order (split on ``;``, ``,`` and line breaks, stripped)."""
    return [item for item in (i.strip() for i in re.split(r"\s*[;,\n]\s*", target)) if item]


def offered_labels(question: str | None, as_letters: bool = False) -> list[str]:
    """The labels a question offers: its lettered options' texts (their letters with ``as_letters``), else
    the unlettered list after ``Options:`` (:func:`~qwenvl.flare.tasks.options.listed_labels`)."""
    options, texts = offered(question)
    return list(options) if as_letters and options else texts


class MultiLabel(OptionTask):
    name = "multi-label classification"
    metric_columns = ("f1", "precision", "recall", "tp", "fp", "fn")
    main_metric = "f1"
    max_new_tokens = 64
    single = False
    default_kind = TEXTS

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return answer_text(answer)

    def answer_hints(self, targets: Sequence[str], questions: Sequence[str] = ()) -> AnswerHints:
        answers = [target_items(t) for t in targets]
        asked = Counter(q for q in questions if q).most_common(1)
        labels, ordered = item_order([a for a in answers if a], offered_labels(asked[0][0]) if asked else ())
        separators = Counter(m.group(0) for t in targets for m in SEPARATOR_RE.finditer(t.strip()))
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
        """A non-empty set of labels in the record's vocabulary (``hints.vocabulary``, else the question's
        rule), joined by its separator: the option letters or option texts the question offers (in the
        vocabulary's case) merged with the training answers' labels of that kind. When every training answer
        keeps one order (or there are none): each label at most once, in that order, which bounds the answer
        by itself. Otherwise any labels, as many as fit ``max_bytes`` but never fewer than a training answer
        holds. Without known labels: up to 8 made-up labels (letters for a letter vocabulary)."""
        vocabulary = self.vocabulary_hint(hints, question)
        known = self.known_items(hints, vocabulary, question)
        labels = merge_order(known, self.offered_items(question, vocabulary), key=collapse)
        sep = lit(vocabulary.separator or hints.separator or DEFAULT_SEPARATOR)
        items = [lit(x) for x in labels]
        if items and (hints.ordered or not hints.n_answers or not known):
            return ordered_subset(items, sep).text
        free = (
            chars("[a-z]" if vocabulary.case == LOWER else "[A-Z]")
            if vocabulary.kind == LETTERS
            else FREE_LABEL
        )
        item = alt(items) if items else free
        cap = len(items) if items else MAX_FREE_LABELS
        room = max_bytes if max_bytes is not None else 10**9
        n = most_repeats(room, 0, item.longest, sep.longest, cap)
        return joined(item, sep, 1, max(1, n, min(hints.max_items, cap))).text

    def parse(self, answer: object, question: str | None = None) -> set[str] | None:
        return parse_multilabel(answer, parse_options(question))

    def render(self, value: Any, question: str | None, vocabulary: AnswerVocabulary) -> str:
        """A label set (:meth:`parse`'s form) written in the vocabulary: each label as its option letter or its
        option's text (in the vocabulary's case), in the order the question offers them (labels it does not
        offer last, sorted), joined by the vocabulary's separator."""
        options, texts = offered(question)
        letter_of = {collapse(t): letter for letter, t in options.items()}
        text_of = {collapse(t): t for t in texts}
        rank = {collapse(t): i for i, t in enumerate(texts)}
        out = []
        for label in sorted(value, key=lambda x: (rank.get(x, len(rank)), x)):
            if vocabulary.kind == LETTERS:
                written = letter_of.get(label, label)
                out.append(vocabulary.cased(written) if len(written) == 1 else written)
            elif vocabulary.kind == TEXTS:
                out.append(vocabulary.cased(text_of.get(label, label)))
            else:
                out.append(label)
        return (vocabulary.separator or DEFAULT_SEPARATOR).join(out)

    def first_value(self, options: dict[str, str]) -> Any:
        return {collapse(next(iter(options.values())))}

    def no_option_fallback(self, vocabulary: AnswerVocabulary) -> Any:
        return FALLBACK_TEXT

    def balance_classes(self, targets: Sequence[str]) -> list[str | None]:
        """Each target's rarest label (lower-cased; by how many of ``targets`` name it, ties by name): drawing
        those equally gives the rare findings their share of the training."""
        labels = [sorted({item.casefold() for item in target_items(t)}) for t in targets]
        counts = Counter(label for items in labels for label in items)
        return [min(items, key=lambda x: (counts[x], x)) if items else None for items in labels]

    def metrics(self, gts: Sequence[Any], preds: Sequence[Any], green=None) -> dict[str, Any]:
        return M.multilabel_micro_f1(gts, preds)

    reward_note = (
        "F1 of the label set of the answer written in the dataset's vocabulary against the reference set "
        "(the challenge's F1 on one sample)"
    )

    def reward(
        self, value: Any, reference: Any, question: str | None = None, *, iou_threshold: float = 0.5
    ) -> float:
        """The challenge's F1 (:func:`~qwenvl.flare.metrics.multilabel_micro_f1`) on this one sample:
        ``2 TP / (2 TP + FP + FN)`` over the challenge's reading of the labels (a letter never equals its
        option's text)."""
        if value is None:
            return 0.0
        return float(M.multilabel_micro_f1([reference], [value])["f1"])


TASK = MultiLabel()
