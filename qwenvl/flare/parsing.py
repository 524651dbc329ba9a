"""Tolerant reading of model answers: the pieces the task types share.

Every ``parse_*`` function takes an answer (usually the model's text, sometimes a JSON value such as a number
or a list) and returns a normalised value, or ``None`` when nothing usable can be read; ``None`` is what the
scorer counts as *unparsable*. Here: text clean-up, the lettered options of a question, boxes, instance boxes
and numbers. Each task type (``qwenvl.flare.tasks``) builds its own parser from these; the rules, in the order
they are tried, are in each function's docstring and in ``docs/metrics.md``. Raw answers of the challenge files
are read strictly, by :mod:`qwenvl.flare.answers`.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from qwenvl.flare.boxes import is_box

Box = list[float]

# ---------------------------------------------------------------------------------------------------------
# Text clean-up shared by all parsers
# ---------------------------------------------------------------------------------------------------------

_SPECIAL_TOKEN_RE = re.compile(r"<\|[^|<>]*\|>")
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_FENCE_RE = re.compile(r"```[A-Za-z0-9_+\-]*")


def clean_text(text: str) -> str:
    """Remove chat special tokens (``<|im_end|>``), ``<think>...</think>`` blocks and Markdown code fences
    (keeping their content), then strip."""
    text = _THINK_RE.sub(" ", text)
    text = _SPECIAL_TOKEN_RE.sub(" ", text)
    text = _FENCE_RE.sub(" ", text)
    return text.strip()


def collapse(text: str) -> str:
    """Case-fold and collapse whitespace: the form labels and option texts are compared in."""
    return " ".join(text.casefold().split())


# ---------------------------------------------------------------------------------------------------------
# Options in a question
# ---------------------------------------------------------------------------------------------------------

# An option marker: a capital letter, optionally in parentheses, followed by ".", ":" or ")"; it must start
# the text or follow whitespace or one of , ; ( [.
_OPTION_MARKER_RE = re.compile(r"(?:^|(?<=[\s,;(\[]))\(?([A-Z])\s?[.:)]")

# Words after which a full stop does not end a sentence ("benign vs. malignant", "e.g. a cyst").
ABBREVIATIONS = frozenset({"vs", "e.g", "i.e", "etc", "cf", "approx", "incl", "esp", "viz", "resp"})
# What a sentence or clause that follows the options starts with: an instruction to the reader.
_INSTRUCTION_WORDS = (
    "answer|separate|list|select|choose|pick|respond|reply|give|provide|output|return|write|use|only|"
    "please|if|more than|multiple|one or more|all that|note|do not|don't|there (?:is|are|may|can)"
)
_INSTRUCTION_RE = re.compile(rf"(?i:{_INSTRUCTION_WORDS})\b")
# An instruction that starts a sentence without a full stop before it ("C: Mass Answer with the letter."): a
# capitalised verb and the word a request goes on with.
_BARE_INSTRUCTION_RE = re.compile(
    r"\s(?=(?:Answer|Separate|Select|Choose|Pick|Respond|Reply|Give|Provide|Output|Return|Write|List|Please|Use)"
    r"\s+(?:with|the|all|one|only|your|every|each|letters?|by|a|an|answer|it|them|up|more)\b)"
)
_BREAK_RE = re.compile(rf"\n|[.!?](?=\s|$)|[,;:](?=\s)|{_BARE_INSTRUCTION_RE.pattern}")


def sentence_end(text: str) -> int:
    """Where the first sentence or clause of ``text`` ends (an index into ``text``; ``len(text)`` when it
    runs to the end): at a line break; at a full stop, ``!`` or ``?`` followed by a space, unless the word
    before it is an abbreviation (:data:`ABBREVIATIONS`: ``vs.``, ``e.g.``) or the next word starts in lower
    case (``Grade 2. left``), and the stop is never inside a number (``2.5``); or at a ``,`` ``;`` ``:``
    followed by an instruction (``, separate letters with commas``); or before a capitalised instruction
    with no stop before it (``Mass Answer with the letter``). After an abbreviation, an instruction still
    starts a new sentence (``etc. Answer with the letter``)."""
    for m in _BREAK_RE.finditer(text):
        mark, rest = m.group(0), text[m.end() :].lstrip(" \t")
        if mark == "\n" or mark.isspace():  # a line break, or a bare instruction after a space
            return m.start()
        instruction = bool(_INSTRUCTION_RE.match(rest))
        if mark in ",;:":
            if instruction:
                return m.start()
            continue
        word = re.search(r"([A-Za-z][A-Za-z.]*)$", text[: m.start()])
        abbreviation = word is not None and word.group(1).lower() in ABBREVIATIONS
        if abbreviation and (instruction or not rest):
            return m.end()  # the stop belongs to the abbreviation ("etc.")
        if not rest or instruction or (not abbreviation and not rest[0].islower()):
            return m.start()
    return len(text)


def parse_options(question: str | None) -> dict[str, str]:
    """The lettered options of a question, ``{"A": "Normal", "B": "Myelofibrosis"}``; ``{}`` when none.

    Recognised styles: ``Options: A: Normal B: Myelofibrosis``, ``... ? A. No, B. Yes``, ``A) x B) y``,
    ``(A) x (B) y``, one option per line; option texts may span several words. The options are the longest
    run of markers A, B, C, ... in alphabetical order (a lone "A." inside the question does not start a
    run that beats the real list; on a tie the later run wins, since options close the question). An
    option's text runs to the next marker; the last one's ends where its sentence or clause does
    (:func:`sentence_end`: ``C: Cardiomegaly. Separate letters with commas.`` gives ``Cardiomegaly``, while
    ``C: Benign vs. malignant`` and ``C: Grade 2.5`` keep their full stops). Separators (``,`` ``;`` ``.``)
    after a text and a trailing ``or`` are dropped.
    """
    if not isinstance(question, str) or not question:
        return {}
    markers = [(m.group(1), m.start(), m.end()) for m in _OPTION_MARKER_RE.finditer(question)]
    best: list[tuple[str, int, int]] = []
    for i, (letter, _, _) in enumerate(markers):
        if letter != "A":
            continue
        chain = [markers[i]]
        for marker in markers[i + 1 :]:
            if marker[0] == chr(ord(chain[-1][0]) + 1):
                chain.append(marker)
        if len(chain) >= len(best):
            best = chain
    if len(best) < 2:
        return {}
    options: dict[str, str] = {}
    for j, (letter, _, end) in enumerate(best):
        if j + 1 < len(best):
            text = question[end : best[j + 1][1]]
        else:
            rest = question[end:]
            text = rest[: sentence_end(rest)]
        text = text.strip().rstrip(",;").strip()
        if text.endswith(".") and not _ends_with_abbreviation(text):
            text = text[:-1].rstrip(",; ")
        if text.casefold().endswith(" or"):
            text = text[:-3].rstrip(",; ")
        options[letter] = " ".join(text.split())
    return options


def _ends_with_abbreviation(text: str) -> bool:
    """Whether ``text``'s final full stop belongs to an abbreviation (``etc.``, ``vs.``)."""
    word = re.search(r"([A-Za-z][A-Za-z.]*)\.$", text)
    return word is not None and word.group(1).lower() in ABBREVIATIONS


# ---------------------------------------------------------------------------------------------------------
# Detection and instance detection
# ---------------------------------------------------------------------------------------------------------

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BOX_RE = re.compile(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*[\])]")
_FLAT_BOX_RE = re.compile(rf"\s*({_NUM})\s*[,\s]\s*({_NUM})\s*[,\s]\s*({_NUM})\s*[,\s]\s*({_NUM})\s*")
_EMPTY_LIST_RE = re.compile(r"^\s*\[\s*\]\s*$")


def _finite_box(values: Any) -> Box | None:
    """``[x1, y1, x2, y2]`` as floats when ``values`` is a box of four finite numbers."""
    if not is_box(values):
        return None
    box = [float(v) for v in values]
    return box if all(math.isfinite(v) for v in box) else None


def _boxes_from_value(value: Any) -> list[Box] | None:
    """Boxes from an already-decoded JSON value: a box, a list of boxes, or Qwen-style ``{"bbox_2d": box}``
    objects (or a list of them). ``None`` when the value holds no box structure at all."""
    if isinstance(value, dict):
        box = _finite_box(value.get("bbox_2d", value.get("bbox")))
        return [box] if box else None
    box = _finite_box(value)
    if box:
        return [box]
    if isinstance(value, (list, tuple)):
        boxes: list[Box] = []
        for item in value:
            found = _boxes_from_value(item)
            if found is None:
                return None
            boxes.extend(found)
        return boxes
    return None


def parse_boxes(answer: object) -> list[Box] | None:
    """Detection boxes ``[[x1, y1, x2, y2], ...]`` from an answer, or ``None``.

    A decoded list is used as is (a single flat box becomes a one-box list). In text, every bracketed group of
    four numbers is a box, in order: this reads JSON and Python literals with any spacing or line breaks, code
    fences, trailing prose, a truncated tail (complete boxes kept), and Qwen-style
    ``{"bbox_2d": [x1, y1, x2, y2], "label": "..."}`` objects. Four bare numbers (``10, 20, 30, 40``) are one
    box. ``[]`` is a valid answer with no boxes. Coordinates are returned as given (pixels or grid).
    """
    if answer is None or isinstance(answer, bool):
        return None
    if isinstance(answer, (list, tuple, dict)):
        return _boxes_from_value(answer)
    text = clean_text(str(answer))
    boxes = [[float(v) for v in m.groups()] for m in _BOX_RE.finditer(text)]
    boxes = [b for b in boxes if all(math.isfinite(v) for v in b)]
    if boxes:
        return boxes
    m = _FLAT_BOX_RE.fullmatch(text)
    if m:
        return [[float(v) for v in m.groups()]]
    if _EMPTY_LIST_RE.match(text):
        return []
    return None


def _instances_from_dict(value: dict) -> dict[str, list[Box]]:
    """Normalise a decoded instance dict: keys as stripped strings, values as box lists (invalid values are
    kept as an instance with no boxes)."""
    return {str(k).strip(): _boxes_from_value(v) or [] for k, v in value.items()}


def _matching_bracket(text: str, start: int) -> int | None:
    """Index of the bracket closing the one at ``text[start]`` (``[`` or ``{``), or ``None`` if truncated."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] in "[{":
            depth += 1
        elif text[i] in "]}":
            depth -= 1
            if depth == 0:
                return i
    return None


_INSTANCE_KEY_RE = re.compile(r"[\"']?([^\"'{}\[\],:\s]+)[\"']?\s*:\s*(?=\[)")


def _scan_instances(text: str) -> dict[str, list[Box]]:
    """Instances read one by one from a dict-like text whose closing part may be missing: every
    ``"id": [...]`` entry whose brackets close is kept; the scan stops at the first truncated entry."""
    found: dict[str, list[Box]] = {}
    pos = 0
    while True:
        m = _INSTANCE_KEY_RE.search(text, pos)
        if not m:
            return found
        close = _matching_bracket(text, m.end())
        if close is None:
            return found
        boxes = parse_boxes(text[m.end() : close + 1])
        found[m.group(1).strip()] = boxes or []
        pos = close + 1


def _instances_from_labelled_boxes(text: str) -> dict[str, list[Box]] | None:
    """Qwen-style ``[{"bbox_2d": [...], "label": "1"}, ...]`` (trailing prose allowed) grouped by label."""
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        return None
    grouped: dict[str, list[Box]] = {}
    for item in value:
        box = _finite_box(item.get("bbox_2d", item.get("bbox")))
        if box is None or "label" not in item:
            return None
        grouped.setdefault(str(item["label"]).strip(), []).append(box)
    return grouped


def parse_instances(answer: object) -> dict[str, list[Box]] | None:
    """Instance-detection answer ``{"1": [[x1, y1, x2, y2], ...], "2": ...}`` as ``{id: [box, ...]}``.

    A decoded dict is used as is. In text (code fences and trailing prose allowed) the first ``{...}`` object
    is decoded as JSON or a Python literal; when that fails (a truncated answer) the complete ``"id": [...]``
    entries are kept and the cut-off one dropped. A single flat box per id becomes a one-box list. Qwen-style
    ``[{"bbox_2d": [...], "label": "1"}, ...]`` is grouped by label. ``{}`` is a valid empty answer; text
    with no complete instance is ``None``.
    """
    if answer is None or isinstance(answer, bool):
        return None
    if isinstance(answer, dict):
        return _instances_from_dict(answer)
    text = clean_text(str(answer))
    start = text.find("{")
    if start < 0:
        return None
    if text[:start].rstrip().endswith("["):
        labelled = _instances_from_labelled_boxes(text[text.rfind("[", 0, start) :].strip())
        if labelled is not None:
            return labelled
    close = _matching_bracket(text, start)
    if close is not None:
        segment = text[start : close + 1]
        for decode in (json.loads, ast.literal_eval):
            try:
                value = decode(segment)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict):
                return _instances_from_dict(value)
    found = _scan_instances(text[start + 1 :])
    return found or None


# ---------------------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------------------

_NUMBER_RE = re.compile(
    r"(?<![\w.])([-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)\s*%?"
)


def parse_number(answer: object) -> float | None:
    """The first number in a counting / regression answer, as a float, or ``None``.

    Accepts integers and decimals with an optional sign, commas as thousand separators (``1,234`` -> 1234),
    an exponent, and a trailing ``%`` (``35%`` -> 35.0, not 0.35). A number must not be glued to a preceding
    letter (``H2O`` has none). JSON numbers are used as is; NaN and infinities are ``None``.
    """
    if answer is None or isinstance(answer, bool):
        return None
    if isinstance(answer, (int, float)):
        value = float(answer)
        return value if math.isfinite(value) else None
    m = _NUMBER_RE.search(clean_text(str(answer)))
    if not m:
        return None
    value = float(m.group(1).replace(",", ""))
    return value if math.isfinite(value) else None
