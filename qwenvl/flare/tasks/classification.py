"""Classification: the answer is one offered option, written in the dataset's vocabulary (an option letter such
as ``B`` in every FLARE25 dataset); scored by balanced accuracy on the challenge's reading of the answer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import zip_longest
from typing import Any

from qwenvl.flare import metrics as M
from qwenvl.flare.answers import answer_text
from qwenvl.flare.parsing import clean_text, collapse, parse_options
from qwenvl.flare.patterns import NO_HINTS, AnswerHints, alt, integer, lit
from qwenvl.flare.schema import SKIP_NOT_AN_OPTION, SKIP_SEVERAL_ANSWERS
from qwenvl.flare.tasks.options import FREE_LABEL, OptionTask, listed_labels, normalise, offered
from qwenvl.flare.vocabulary import LETTERS, LOWER, TEXTS, AnswerVocabulary

# A letter used as an answer: wrapped in (), [] or followed by ")", or followed by . , ; : ! " - ", a line
# end or the end of the text. "A normal image" (a letter followed by a word) is not a letter answer.
_LETTER_TOKEN = r"[(\[]?([A-Za-z])(?:[)\]]|(?=[.,;:!]|\s*$|\s*\n|\s+[-\u2013\u2014]\s))"
_BARE_LETTER_RE = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:)]?")
_EXPLICIT_RE = re.compile(
    r"(?i:\b(?:answer|correct\s+(?:option|choice)|choice)\b(?:\s+(?:is|would\s+be|should\s+be))?)"
    r"\s*[:\-]?\s*(?i:option\s+|letter\s+)?" + _LETTER_TOKEN
)
_LEADING_RE = re.compile(r"^[(\[]?([A-Za-z])(?:[)\]]|\.(?![A-Za-z]\.)|:|\s+[-\u2013\u2014]\s)")
_LEADING_WORD_RE = re.compile(r"^([A-Z])\s+(\S.*)$", re.DOTALL)
_LONE_CAPITAL_RE = re.compile(r"(?<![\w'])([A-Z])(?![\w'])")
_DECORATION = "*_`\"'"


def _option_by_text(text: str, options: dict[str, str]) -> str | None:
    """The letter whose option text the answer names: an exact match first, else the only option text found
    as whole words (when several are found and one contains all the others, that one)."""
    answer = collapse(text).strip(" .!")
    by_text = {collapse(t).strip(" .!"): letter for letter, t in options.items() if t.strip(" .!")}
    if answer in by_text:
        return by_text[answer]
    found = [t for t in by_text if re.search(rf"(?<!\w){re.escape(t)}(?!\w)", answer)]
    if len(found) == 1:
        return by_text[found[0]]
    if found:
        longest = max(found, key=len)
        if all(t in longest for t in found):
            return by_text[longest]
    return None


def _lone_capital(text: str, options: dict[str, str]) -> str | None:
    """The only distinct stand-alone capital that is an option letter, ignoring the article "A" and the
    pronoun "I" when a lower-case word follows them."""
    letters = set()
    for m in _LONE_CAPITAL_RE.finditer(text):
        letter = m.group(1)
        if letter in "AI" and re.match(r"\s+[a-z]", text[m.end() :]):
            continue
        if letter in options:
            letters.add(letter)
    return letters.pop() if len(letters) == 1 else None


def parse_classification(answer: object, options: dict[str, str] | None = None) -> str | None:
    """An option letter (upper case) from a classification answer, or ``None``.

    Rules, first hit wins:

    1. the whole answer is a letter, maybe wrapped or punctuated: ``B``, ``b``, ``(B)``, ``[B]``, ``B.``;
    2. an explicit statement: ``The answer is B.``, ``Answer: b``, ``The correct option is (C)``,
       ``Final answer: B - Normal`` (the first one in the text);
    3. a leading letter with a delimiter: ``B) Normal``, ``B. Myelofibrosis``, ``(B) ...``, ``B: ...``;
       or a leading capital followed by that option's own text (``B Myelofibrosis``);
    4. with options: the option text named in the answer (``Myelofibrosis``, ``It shows myelofibrosis``);
       exact match first, then a unique whole-word match;
    5. with options: the only stand-alone capital letter that is an option letter (``I think C is right``),
       never the article in ``A normal image``.

    Letters are accepted even if the question lists no such option (they are explicit answers, just wrong).
    """
    if answer is None or isinstance(answer, bool):
        return None
    text = clean_text(str(answer)).strip(_DECORATION + " \n\t")
    if not text:
        return None
    options = options or {}
    m = _BARE_LETTER_RE.fullmatch(text)
    if m:
        return m.group(1).upper()
    plain = text.replace("**", "").replace("`", "")
    m = _EXPLICIT_RE.search(plain)
    if m:
        return m.group(1).upper()
    m = _LEADING_RE.match(plain)
    if m:
        return m.group(1).upper()
    m = _LEADING_WORD_RE.match(plain)
    if m and m.group(1) in options and collapse(m.group(2)).startswith(collapse(options[m.group(1)])):
        return m.group(1)
    if options:
        return _option_by_text(plain, options) or _lone_capital(plain, options)
    return None


def raw_letter_problem(answer: object, options: dict[str, str]) -> tuple[str, str] | None:
    """Known noise of a labelled single-label answer, ``(reason, detail)``, or ``None``: several letters
    (``A B``, ``A, C``: :data:`~qwenvl.flare.schema.SKIP_SEVERAL_ANSWERS`) or an answer that is no letter the
    question offers (``T`` for Tumor: :data:`~qwenvl.flare.schema.SKIP_NOT_AN_OPTION`). A single offered
    letter, in any case and maybe wrapped (``b``, ``(B)``, ``B.``), is clean, and so is an option's own text
    (``Polyp``: a dataset answering in option texts, its vocabulary). Without options in the question nothing
    can be judged (``None``)."""
    if not options:
        return None
    text = " ".join(str(answer).split())
    offered = ", ".join(options)
    m = _BARE_LETTER_RE.fullmatch(text)
    if m and m.group(1).upper() in options:
        return None
    if collapse(text) in {collapse(t) for t in options.values()}:
        return None
    pieces = [p for p in re.split(r"[\s,;/&+]+", text) if p]
    if len(pieces) > 1 and all(_BARE_LETTER_RE.fullmatch(p) for p in pieces):
        return SKIP_SEVERAL_ANSWERS, (
            f"answer {text!r} gives {len(pieces)} letters on a single-label question (options {offered})"
        )
    return SKIP_NOT_AN_OPTION, f"answer {text!r} is not one of the offered letters {offered}"


def choices(question: str | None) -> dict[str, str]:
    """The options a classification answer chooses from, by letter: the question's lettered options, else its
    unlettered list (``Options: benign, malignant.``) under the letters A, B, ... in list order."""
    options = parse_options(question)
    if options:
        return options
    return {chr(ord("A") + i): label for i, label in enumerate(listed_labels(question)[:26])}


class Classification(OptionTask):
    name = "classification"
    metric_columns = ("balanced_accuracy", "accuracy")
    main_metric = "balanced_accuracy"
    max_new_tokens = 16
    single = True
    default_kind = LETTERS

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return answer_text(answer)

    def raw_answer_problem(self, answer: Any, question: str | None) -> tuple[str, str] | None:
        return raw_letter_problem(answer, parse_options(question))

    def answer_hints(self, targets: Sequence[str], questions: Sequence[str] = ()) -> AnswerHints:
        """The distinct training answers that are in some vocabulary of their question (letters, option
        texts, numbers), sorted."""
        labels = sorted(
            {t.strip() for t, q in zip_longest(targets, questions[: len(targets)]) if self.answer_kind(t, q)}
        )
        return AnswerHints(labels=tuple(labels), n_answers=len(targets))

    def answer_pattern(
        self, question: str | None, hints: AnswerHints = NO_HINTS, max_bytes: int | None = None
    ) -> str | None:
        """Exactly one answer in the record's vocabulary (``hints.vocabulary``, else the question's rule):
        one of the letters the question offers (else those the training answers use, else any letter in the
        vocabulary's case), or one of its option texts (else the training answers' texts, else a made-up
        label), or one of its numeric options (else an integer of up to 3 digits)."""
        vocabulary = self.vocabulary_hint(hints, question)
        items = list(
            dict.fromkeys(
                self.offered_items(question, vocabulary) or self.known_items(hints, vocabulary, question)
            )
        )
        if vocabulary.kind == LETTERS:
            return "[" + ("".join(items) or ("a-z" if vocabulary.case == LOWER else "A-Z")) + "]"
        if items:
            return alt([lit(x) for x in items]).text
        return (FREE_LABEL if vocabulary.kind == TEXTS else integer(3)).text

    def parse(self, answer: object, question: str | None = None) -> str | None:
        return parse_classification(answer, choices(question))

    def read_answer(self, answer: object, question: str | None = None) -> str | None:
        """The challenge's reading (the normalised answer string); ``None`` when the answer names no option in
        any form (``I am not sure``), which matches no class either way and is counted as unparsable."""
        value = super().read_answer(answer, question)
        if value is None or (
            self.parse(answer, question) is None and self.answer_kind(answer, question) is None
        ):
            return None
        return value

    def parse_reference(self, answer: object, question: str | None = None) -> str | None:
        """The normalised reference string: a noisy label such as ``A B`` stays its own class."""
        return OptionTask.read_answer(self, answer, question)

    def render(self, value: Any, question: str | None, vocabulary: AnswerVocabulary) -> str:
        """The option letter ``value`` as the vocabulary writes it: the letter, or its option's text."""
        options = choices(question)
        if vocabulary.kind == LETTERS or value not in options:
            return vocabulary.cased(str(value))
        return vocabulary.cased(options[value])

    def first_value(self, options: dict[str, str]) -> Any:
        return next(iter(options))

    def no_option_fallback(self, vocabulary: AnswerVocabulary) -> Any:
        return vocabulary.cased("A")

    def balance_classes(self, targets: Sequence[str]) -> list[str | None]:
        """Each target's answer, stripped and upper-cased: balanced accuracy weighs these classes equally."""
        return [t.strip().upper() or None for t in targets]

    def metrics(self, gts: Sequence[Any], preds: Sequence[Any], green=None) -> dict[str, Any]:
        return {"balanced_accuracy": M.balanced_accuracy(gts, preds), "accuracy": M.accuracy(gts, preds)}

    reward_note = (
        "1 when the answer written in the dataset's vocabulary equals the reference (the challenge's "
        "comparison) and names an offered option, else 0 (group mean = accuracy)"
    )

    def reward(
        self, value: Any, reference: Any, question: str | None = None, *, iou_threshold: float = 0.5
    ) -> float:
        """1.0 when the answer, as the challenge reads it (:meth:`read_answer` of the written answer), is the
        reference, 0.0 otherwise; an answer the question does not offer (when it lists options) is wrong even
        if it were the reference. The mean over a group is its accuracy."""
        options, texts = offered(question)
        allowed = {normalise(x) for x in (*options, *texts)}
        if value is None or (allowed and value not in allowed):
            return 0.0
        return 1.0 if value == reference else 0.0


TASK = Classification()
