"""Tolerant parsing of model answers (and ground-truth answers) for the seven FLARE25 task types.

Every ``parse_*`` function takes the raw answer (usually the model's text, sometimes a JSON value such as a
number or a list) and returns a normalised value, or ``None`` when nothing usable can be read. ``None`` is
what the scorer counts as *unparsable*. The rules, in the order they are tried, are listed in each function's
docstring and in ``docs/metrics.md``.

Normalised values:

========================== ==============================================================
task type                  value
========================== ==============================================================
classification             an upper-case option letter, ``"B"``
multi-label classification a set of lower-cased labels, ``{"pleural effusion", "nodule"}``
detection                  a list of ``[x1, y1, x2, y2]`` float boxes (``[]`` = no boxes)
instance_detection         a dict instance id (str) -> list of boxes
counting, regression       a float
report_generation          the stripped report text
========================== ==============================================================
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from qwenvl.flare.boxes import convert_boxes, is_box
from qwenvl.flare.datasets import (
    CLASSIFICATION,
    COUNTING,
    DETECTION,
    INSTANCE_DETECTION,
    MULTI_LABEL,
    REGRESSION,
    REPORT_GENERATION,
    normalize_task_type,
)

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


def _collapse(text: str) -> str:
    """Case-fold and collapse whitespace: the form labels and option texts are compared in."""
    return " ".join(text.casefold().split())


# ---------------------------------------------------------------------------------------------------------
# Options in a question
# ---------------------------------------------------------------------------------------------------------

# An option marker: a capital letter, optionally in parentheses, followed by ".", ":" or ")"; it must start
# the text or follow whitespace or one of , ; ( [.
_OPTION_MARKER_RE = re.compile(r"(?:^|(?<=[\s,;(\[]))\(?([A-Z])\s?[.:)]")


def parse_options(question: str | None) -> dict[str, str]:
    """The lettered options of a question, ``{"A": "Normal", "B": "Myelofibrosis"}``; ``{}`` when none.

    Recognised styles: ``Options: A: Normal B: Myelofibrosis``, ``... ? A. No, B. Yes``, ``A) x B) y``,
    ``(A) x (B) y``, one option per line; option texts may span several words. The options are the longest
    run of markers A, B, C, ... in alphabetical order (a lone "A." inside the question does not start a
    run that beats the real list; on a tie the later run wins, since options close the question). The last
    option's text ends at the end of its line. Separators (``,`` ``;`` ``.``) after a text are dropped.
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
            text = question[end:].split("\n", 1)[0]
        text = text.strip().rstrip(",;.").strip()
        if text.casefold().endswith(" or"):
            text = text[:-3].rstrip(",; ")
        options[letter] = " ".join(text.split())
    return options


# ---------------------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------------------

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
    answer = _collapse(text).strip(" .!")
    by_text = {_collapse(t): letter for letter, t in options.items() if t}
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
    if m and m.group(1) in options and _collapse(m.group(2)).startswith(_collapse(options[m.group(1)])):
        return m.group(1)
    if options:
        return _option_by_text(plain, options) or _lone_capital(plain, options)
    return None


def normalize_classification_gt(answer: object, options: dict[str, str] | None = None) -> str | None:
    """A ground-truth classification answer as a class label: the parsed letter when the answer parses,
    else the stripped, upper-cased text (so a noisy label such as ``A B`` stays its own class)."""
    letter = parse_classification(answer, options)
    if letter is not None:
        return letter
    if answer is None:
        return None
    text = " ".join(str(answer).split()).upper()
    return text or None


# ---------------------------------------------------------------------------------------------------------
# Multi-label classification
# ---------------------------------------------------------------------------------------------------------

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
        return _collapse(options[letter]) if letter in options else letter.lower()
    m = _LETTERED_TEXT_RE.match(item)
    if m:
        letter = item.lstrip("([")[0].upper()
        return _collapse(options[letter]) if letter in options else _collapse(m.group(1))
    return _collapse(item)


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


def boxes_to_pixels(value: Any, width: int, height: int) -> Any:
    """A parsed detection / instance value on Qwen3-VL's 0-1000 grid -> original-image pixels (structure
    kept; ``None`` stays ``None``). Uses ``qwenvl.flare.boxes.convert_boxes``."""
    if value is None:
        return None
    return convert_boxes(value, width, height, to_grid=False)


def boxes_to_grid(value: Any, width: int, height: int) -> Any:
    """A parsed detection / instance value in original-image pixels -> the 0-1000 grid (``None`` stays
    ``None``). Uses ``qwenvl.flare.boxes.convert_boxes``."""
    if value is None:
        return None
    return convert_boxes(value, width, height, to_grid=True)


# ---------------------------------------------------------------------------------------------------------
# Numbers and reports
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


def parse_report(answer: object) -> str | None:
    """A report as stripped text (special tokens and code fences removed), ``None`` when empty."""
    if not isinstance(answer, str):
        return None
    text = clean_text(answer)
    return text or None


# ---------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------


def parse_answer(answer: object, task_type: str, question: str | None = None) -> Any:
    """Parse an answer for ``task_type`` (a normalised or raw FLARE ``TaskType``); ``None`` = unparsable.

    ``question`` supplies the options for classification and multi-label answers."""
    task = normalize_task_type(task_type)
    if task == CLASSIFICATION:
        return parse_classification(answer, parse_options(question))
    if task == MULTI_LABEL:
        return parse_multilabel(answer, parse_options(question))
    if task == DETECTION:
        return parse_boxes(answer)
    if task == INSTANCE_DETECTION:
        return parse_instances(answer)
    if task in (COUNTING, REGRESSION):
        return parse_number(answer)
    if task == REPORT_GENERATION:
        return parse_report(answer)
    raise ValueError(f"unknown task type {task_type!r}; expected one of the seven FLARE25 task types")
