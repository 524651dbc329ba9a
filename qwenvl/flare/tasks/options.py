"""What the option tasks share: answers that name offered options, in one dataset's vocabulary.

Classification (one option) and multi-label classification (a set of options) answer with the options a
question offers: its lettered options (``A: Nodule B: Effusion``, :func:`~qwenvl.flare.parsing.parse_options`)
or an unlettered list (``Options: caries, crown.``, :func:`listed_labels`). The challenge compares answers as
text, so each dataset writes them in one vocabulary (:mod:`qwenvl.flare.vocabulary`: letters, texts or numbers,
a separator, a case), and :class:`OptionTask` knows, for both task types:

- the challenge's own reading of an answer (:meth:`OptionTask.read_answer`, also the reference's): the
  stripped, lower-cased string, or the set of stripped, lower-cased ``;``/``,``-separated labels. Scores
  are computed on it and nothing else, so a letter never equals its option's text;
- which vocabulary an answer is written in (:meth:`OptionTask.answer_kind`), what a dataset's labelled
  answers say about theirs (:meth:`OptionTask.learn_vocabulary`), what a question states
  (:meth:`OptionTask.question_vocabulary`) and the task's default;
- how a model answer, read tolerantly (:meth:`~qwenvl.flare.tasks.base.TaskType.parse`), is written in a
  vocabulary (:meth:`OptionTask.render`): what the challenge answer, the GRPO reward and the fallback use.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from itertools import zip_longest
from typing import Any, ClassVar

from qwenvl.flare.parsing import collapse, parse_options, sentence_end
from qwenvl.flare.patterns import NO_HINTS, AnswerHints, Rx
from qwenvl.flare.tasks.base import TaskType
from qwenvl.flare.vocabulary import (
    AS_WRITTEN,
    LETTERS,
    LOWER,
    META_KEY,
    NUMBERS,
    TEXTS,
    UPPER,
    AnswerVocabulary,
    stated_kind,
    stated_separator,
)

_LISTED_RE = re.compile(r"\b[Oo]ptions?\s*:\s*")
_LETTER_RE = re.compile(r"[A-Za-z]")
_NUMBER_ITEM_RE = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)")
_LABEL_SPLIT_RE = re.compile(r"[;,]")  # how the challenge splits a multi-label answer
SEPARATOR_RE = re.compile(r"\s*[;,]\s*")  # a separator as a training answer writes it, spacing included
DEFAULT_SEPARATOR = ", "
# A label the model makes up when none is known: a letter, then up to 39 label characters (no separator).
FREE_LABEL = Rx("[A-Za-z][A-Za-z0-9 ()'/-]{0,39}", 1, 40)


def listed_labels(question: str | None) -> list[str]:
    """The labels of an unlettered option list: the comma- or semicolon-separated items after ``Options:`` up
    to the end of that sentence (``Options: caries, periapical lesion, crown. List every finding...``), a
    final ``and`` / ``or`` dropped; ``[]`` when there is none."""
    m = _LISTED_RE.search(question or "")
    if not m:
        return []
    rest = (question or "")[m.end() :]
    listed = rest[: sentence_end(rest)].strip().rstrip(".")
    items = re.split(r"\s*[;,]\s*(?:(?:and|or)\s+)?|\s+(?:and|or)\s+", listed)
    return [item.strip() for item in items if item.strip()]


def offered(question: str | None) -> tuple[dict[str, str], list[str]]:
    """``(lettered options, offered texts)`` of a question: its lettered options and their texts, else no
    letters and the unlettered list's labels."""
    options = parse_options(question)
    return options, (list(options.values()) if options else listed_labels(question))


def normalise(text: object) -> str:
    """The challenge's normalisation of an answer or a label: stripped and lower-cased."""
    return str(text).strip().lower()


class OptionTask(TaskType):
    """A task type whose answers name offered options (see the module docstring). Subclasses set
    :attr:`single` and :attr:`default_kind` and keep their own tolerant :meth:`parse`."""

    has_vocabulary = True
    single: ClassVar[bool]  # one option (classification) or a set of them (multi-label)
    default_kind: ClassVar[str]  # the kind answers take when neither the dataset nor the question says

    # ------------------------------------------------------------------------------ the challenge's reading
    def answer_items(self, answer: object) -> list[str]:
        """The answer's items as the challenge splits them (stripped; empty ones dropped): the whole answer
        for a single-option task, the ``;``/``,``-separated labels for a set."""
        if answer is None or isinstance(answer, bool):
            return []
        if isinstance(answer, (list, tuple)):
            answer = ", ".join(str(a) for a in answer)
        text = str(answer)
        pieces = [text] if self.single else _LABEL_SPLIT_RE.split(text)
        return [p.strip() for p in pieces if p.strip()]

    def read_answer(self, answer: object, question: str | None = None) -> Any:
        """The challenge's reading of an answer, what every score is computed on: the normalised string
        (single) or the set of normalised labels (set); ``None`` when it is empty."""
        items = [normalise(i) for i in self.answer_items(answer)]
        if not items:
            return None
        return items[0] if self.single else set(items)

    def parse_reference(self, answer: object, question: str | None = None) -> Any:
        return self.read_answer(answer, question)

    # ------------------------------------------------------------------------------------- vocabularies
    def item_kind(self, item: str, options: dict[str, str], texts: Sequence[str]) -> str | None:
        """The vocabulary one answer item is written in: an offered letter (any letter when the question
        offers none), an offered text (any text that is no letter when none is offered), a number; ``None``
        when it is none of these (a letter or text the question does not offer)."""
        item = item.strip()
        if _LETTER_RE.fullmatch(item):
            return LETTERS if not options or item.upper() in options else None
        if texts:
            return TEXTS if collapse(item) in {collapse(t) for t in texts} else None
        if _NUMBER_ITEM_RE.fullmatch(item):
            return NUMBERS
        return TEXTS if item else None

    def answer_kind(self, answer: object, question: str | None = None) -> str | None:
        """The vocabulary an answer is written in, when all its items are in the same one (and a
        single-option answer has one item); ``None`` otherwise."""
        items = self.answer_items(answer)
        if not items or (self.single and len(items) != 1):
            return None
        options, texts = offered(question)
        kinds = {self.item_kind(item, options, texts) for item in items}
        return kinds.pop() if len(kinds) == 1 and None not in kinds else None

    def in_vocabulary(self, answer: object, question: str | None, vocabulary: AnswerVocabulary) -> bool:
        """Whether an answer is written in ``vocabulary``'s kind with items the question offers (its
        separator and case are not required: the challenge's reading ignores them)."""
        return self.answer_kind(answer, question) == vocabulary.kind

    def learn_vocabulary(
        self, targets: Sequence[str], questions: Sequence[str | None] = ()
    ) -> AnswerVocabulary | None:
        """The vocabulary of one dataset's labelled answers ``targets`` (with their ``questions``): the kind
        most of them are written in (``n_other`` counts the rest), the case of its items and, for sets, the
        commonest separator between labels; ``None`` when no answer is in any vocabulary."""
        kinds: Counter[str | None] = Counter()
        items: dict[str, list[tuple[str, str | None]]] = {}
        separators: Counter[str] = Counter()
        for target, question in zip_longest(targets, questions[: len(targets)]):
            kind = self.answer_kind(target, question)
            kinds[kind] += 1
            if kind is None:
                continue
            options, texts = offered(question)
            for item in self.answer_items(target):
                written = next((t for t in texts if collapse(t) == collapse(item)), None)
                items.setdefault(kind, []).append((item, written))
            if not self.single:
                separators.update(m.group(0) for m in SEPARATOR_RE.finditer(str(target).strip()))
        found = [k for k in (LETTERS, TEXTS, NUMBERS) if kinds[k]]
        if not found:
            return None
        kind = max(found, key=lambda k: kinds[k])  # a tie keeps the earlier kind
        separator = None if self.single else separators.most_common(1)[0][0] if separators else None
        return AnswerVocabulary(
            kind=kind,
            separator=separator,
            case=_case_of(kind, items[kind]),
            n_answers=len(targets),
            n_other=len(targets) - kinds[kind],
        )

    def question_vocabulary(self, question: str | None) -> AnswerVocabulary | None:
        """The vocabulary the question states (``Separate letters with commas``), ``None`` when it states no
        kind of answer."""
        kind = stated_kind(question)
        if kind is None:
            return None
        return self._vocabulary(kind, question)

    def default_vocabulary(self, question: str | None = None) -> AnswerVocabulary:
        """The task type's default (its :attr:`default_kind`), with the separator the question names."""
        return self._vocabulary(self.default_kind, question)

    def _vocabulary(self, kind: str, question: str | None) -> AnswerVocabulary:
        separator = None if self.single else stated_separator(question) or DEFAULT_SEPARATOR
        return AnswerVocabulary(kind=kind, separator=separator, case=UPPER if kind == LETTERS else AS_WRITTEN)

    def vocabulary_of(self, meta: dict | None, question: str | None) -> AnswerVocabulary:
        """The vocabulary a record's answer is written in: the one resolved for it (``meta.answer_vocabulary``),
        else the question's, else the task default."""
        given = (meta or {}).get(META_KEY)
        if isinstance(given, dict):
            return AnswerVocabulary.from_record(given)
        return self.question_vocabulary(question) or self.default_vocabulary(question)

    def reference_vocabulary(self, reference: object, question: str | None) -> AnswerVocabulary:
        """The vocabulary one reference answer is written in (a reward without its dataset's vocabulary)."""
        return self.learn_vocabulary([str(reference)], [question]) or self.default_vocabulary(question)

    # ------------------------------------------------------------------------------------- writing answers
    def render(self, value: Any, question: str | None, vocabulary: AnswerVocabulary) -> str:
        """A parsed answer (an option letter, or a set of labels) written in ``vocabulary``."""
        raise NotImplementedError

    def answer_value(
        self, text: str, question: str | None, vocabulary: AnswerVocabulary | None = None
    ) -> Any:
        """The challenge's reading of the answer the toolkit writes for model ``text`` in ``vocabulary``
        (default: the question's rule): what a reward compares with the reference. ``None`` when the text
        does not parse."""
        value = self.parse(text, question)
        if value is None:
            return None
        vocabulary = vocabulary or self.vocabulary_of(None, question)
        return self.read_answer(self.render(value, question, vocabulary), question)

    def challenge_answer(self, value: Any, text: str, meta: dict) -> Any:
        """The parsed answer written in the record's vocabulary (:meth:`vocabulary_of`)."""
        question = meta.get("question")
        return self.render(value, question, self.vocabulary_of(meta, question))

    def fallback_answer(self, question: str | None, vocabulary: AnswerVocabulary | None = None) -> Any:
        """The first option the question offers, written in ``vocabulary`` (default: the question's rule)."""
        options, texts = offered(question)
        vocabulary = vocabulary or self.vocabulary_of(None, question)
        if options:
            return self.render(self.first_value(options), question, vocabulary)
        if texts and vocabulary.kind == TEXTS:
            return vocabulary.cased(texts[0])
        return self.no_option_fallback(vocabulary)

    def first_value(self, options: dict[str, str]) -> Any:
        """The parsed value of the first offered option (what :meth:`fallback_answer` writes)."""
        raise NotImplementedError

    def no_option_fallback(self, vocabulary: AnswerVocabulary) -> Any:
        """The fallback when the question offers nothing to choose from."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- the constraint
    def vocabulary_hint(self, hints: AnswerHints, question: str | None) -> AnswerVocabulary:
        """The vocabulary a decoding pattern is built for: the record's (``hints.vocabulary``), else the
        question's rule."""
        return hints.vocabulary or self.vocabulary_of(None, question)

    def offered_items(self, question: str | None, vocabulary: AnswerVocabulary) -> list[str]:
        """The items of ``vocabulary`` the question offers, written as answers write them: its option letters
        (in the vocabulary's case) or its option texts (likewise); ``[]`` when it offers none of that kind."""
        options, texts = offered(question)
        if vocabulary.kind == LETTERS:
            return [vocabulary.cased(letter) for letter in options]
        if vocabulary.kind == TEXTS:
            return [vocabulary.cased(t) for t in texts]
        return [t for t in texts if _NUMBER_ITEM_RE.fullmatch(t)]

    def known_items(
        self, hints: AnswerHints, vocabulary: AnswerVocabulary, question: str | None
    ) -> list[str]:
        """The training answers' items (``hints.labels``) that are in ``vocabulary``'s kind."""
        options, texts = offered(question)
        return [x for x in hints.labels if self.item_kind(x, options, texts) == vocabulary.kind]

    def answer_pattern(
        self, question: str | None, hints: AnswerHints = NO_HINTS, max_bytes: int | None = None
    ) -> str | None:
        raise NotImplementedError


def _case_of(kind: str, items: Sequence[tuple[str, str | None]]) -> str:
    """The case of a vocabulary's items ``(as written, the offered text it names or None)``: texts exactly as
    the options write them, else all lower or all upper case; letters upper unless all lower."""
    if kind == TEXTS and items and all(w is not None and item == w for item, w in items):
        return AS_WRITTEN
    letters = [c for item, _ in items for c in item if c.isalpha()]
    if letters and all(c.islower() for c in letters):
        return LOWER
    if kind == LETTERS or (letters and all(c.isupper() for c in letters)):
        return UPPER
    return AS_WRITTEN
