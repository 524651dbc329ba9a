"""Bounded regular expressions for format-guaranteed decoding, built from parts that know their length.

A task type's decoding constraint (``TaskType.answer_pattern``) is a regular expression, as a plain string, that
every answer the model may write must match in full. A grammar only guarantees that the text so far can still
be completed, so a constraint must also end within the token budget: every part here carries the most UTF-8
bytes a match can take (:attr:`Rx.longest`), and tasks choose their repetition bounds so that the whole answer
fits. Every token of a byte-level BPE vocabulary decodes to at least one byte, so an answer of at most N bytes
is at most N tokens: a bound in bytes is a bound in tokens, whatever tokens the model picks.

The syntax is the subset that Python's :mod:`re`, xgrammar and vLLM's structured outputs read alike:
literals, ``(?:...)`` groups, ``|``, ``?``, ``{m,n}`` and ``[...]`` classes of ASCII characters.

    box = seq(lit("["), joined(GRID_INT, lit(", "), 4, 4), lit("]"))
    boxes = seq(lit("["), opt(joined(box, lit(", "), 1, 3)), lit("]"))
    boxes.text     # the regex
    boxes.longest  # 78 bytes: "[[1000, 1000, 1000, 1000], ...]" with three boxes
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from qwenvl.flare.schema import BOX_QWEN1000
from qwenvl.flare.vocabulary import AnswerVocabulary

_META = set("\\.^$|?*+()[]{}")


# ------------------------------------------------------------------------------ what training answers say
@dataclass(frozen=True)
class AnswerHints:
    """What one dataset's training answers of one task type look like: what a decoding constraint falls back
    on where the question does not say (``TaskType.answer_hints`` reads them from the training targets).
    A field a task type does not use keeps its empty value."""

    labels: tuple[str, ...] = ()  # distinct answer items: option letters, labels or instance ids
    ordered: bool = False  # every training answer lists its items in the order of ``labels``
    separator: str | None = None  # the text between the items of a multi-item answer ("; ", ",")
    max_items: int = 0  # most repeated parts in one answer: labels, boxes, boxes of one instance
    max_digits: int = 0  # most integer digits of a number in an answer
    max_decimals: int = 0  # most digits after the decimal point of a number in an answer
    box_format: str = BOX_QWEN1000  # how the dataset's boxes are written (qwen1000 grid or pixel)
    n_answers: int = 0  # training answers these hints were read from
    vocabulary: AnswerVocabulary | None = None  # option tasks: the vocabulary answers are written in


NO_HINTS = AnswerHints()

_NUMBER_TEXT_RE = re.compile(r"(\d+)(?:\.(\d+))?")


def merge_order(known: Sequence[str], offered: Sequence[str], key=lambda x: x) -> list[str]:
    """``known`` items with the ``offered`` ones it lacks inserted after the offered item before them
    (at the front when none is), so an order that agrees with ``offered`` stays in ``offered`` order; items
    are compared by ``key``."""
    order = list(known)
    keys = [key(x) for x in order]
    previous = None
    for item in offered:
        k = key(item)
        if k not in keys:
            at = keys.index(previous) + 1 if previous is not None else 0
            order.insert(at, item)
            keys.insert(at, k)
        previous = k
    return order


def number_widths(texts: Sequence[str]) -> tuple[int, int]:
    """``(most integer digits, most decimals)`` of the numbers written in ``texts``."""
    digits = decimals = 0
    for text in texts:
        for m in _NUMBER_TEXT_RE.finditer(text):
            digits = max(digits, len(m.group(1)))
            decimals = max(decimals, len(m.group(2) or ""))
    return digits, decimals


def item_order(answers: Sequence[Sequence[str]], prefer: Sequence[str] = ()) -> tuple[tuple[str, ...], bool]:
    """The distinct items of several answers' item lists, and whether one order agrees with every answer.

    ``(items, True)``: the items in an order every answer keeps, ties broken by their order in ``prefer``
    (e.g. the options as the question lists them), then by first appearance; ``(items in first-appearance
    order, False)`` when answers disagree (``a;b`` and ``b;a``) or an answer lists an item twice."""
    first: dict[str, int] = {item: i - len(prefer) for i, item in enumerate(prefer)}
    before: dict[str, set[str]] = {}  # item -> the items some answer lists before it
    repeated = False
    for items in answers:
        repeated |= len(set(items)) < len(items)
        for i, item in enumerate(items):
            first.setdefault(item, len(first))
            before.setdefault(item, set()).update(items[:i])
    seen = sorted((item for item in first if item in before), key=first.__getitem__)
    if repeated:
        return tuple(seen), False
    order: list[str] = []
    while len(order) < len(seen):
        placed = set(order)
        ready = [item for item in seen if item not in placed and before[item] <= placed]
        if not ready:
            return tuple(seen), False
        order.append(ready[0])
    return tuple(order), True


# ------------------------------------------------------------------------------------ regular expressions
@lru_cache(maxsize=1024)
def longest_match_bytes(pattern: str) -> int | None:
    """The most UTF-8 bytes a full match of ``pattern`` can take, read off the regex itself (Python's own
    regex parser, on the pattern's bytes); ``None`` when it is unbounded (``*``, ``+``)."""
    try:
        from re import _parser as sre_parse  # Python >= 3.11
    except ImportError:  # pragma: no cover - Python 3.10
        import sre_parse  # type: ignore[no-redef]

    longest = sre_parse.parse(pattern.encode("utf-8")).getwidth()[1]
    return None if longest >= sre_parse.MAXREPEAT else int(longest)


@dataclass(frozen=True)
class Rx:
    """A regular expression and the fewest / most UTF-8 bytes one of its matches takes."""

    text: str
    shortest: int
    longest: int


def escape(text: str) -> str:
    """``text`` as a literal regex: only the metacharacters are escaped (``re.escape`` also escapes spaces and
    other characters, which not every regex engine reads back)."""
    return "".join("\\" + c if c in _META else c for c in text)


def lit(text: str) -> Rx:
    """Exactly ``text``."""
    n = len(text.encode("utf-8"))
    return Rx(escape(text), n, n)


def chars(char_class: str, lo: int = 1, hi: int = 1) -> Rx:
    """``lo`` to ``hi`` characters of an ASCII class such as ``[0-9]``."""
    if hi == lo == 1:
        return Rx(char_class, 1, 1)
    count = f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"
    return Rx(char_class + count, lo, hi)


def _top_level(text: str) -> tuple[bool, bool]:
    """``(one_group, has_alternation)``: whether ``text`` is a single ``(?:...)`` group, and whether it has
    a ``|`` outside every group."""
    depth, escaped, in_class = 0, False, False
    one_group, alternation = text.startswith("(?:"), False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0 and i != len(text) - 1:
                one_group = False
        elif c == "|" and depth == 0:
            alternation = True
    return one_group, alternation


def _group(rx: Rx) -> str:
    """``rx`` as one atom a quantifier can follow."""
    return rx.text if _top_level(rx.text)[0] else f"(?:{rx.text})"


def seq(*parts: Rx) -> Rx:
    """The parts one after the other."""
    return Rx(
        "".join(_group(p) if _top_level(p.text)[1] else p.text for p in parts),
        sum(p.shortest for p in parts),
        sum(p.longest for p in parts),
    )


def alt(parts: Sequence[Rx]) -> Rx:
    """Any one of the parts (at least one part)."""
    if not parts:
        raise ValueError("alt() needs at least one alternative")
    if len(parts) == 1:
        return parts[0]
    return Rx(
        "(?:" + "|".join(p.text for p in parts) + ")",
        min(p.shortest for p in parts),
        max(p.longest for p in parts),
    )


def opt(part: Rx) -> Rx:
    """The part or nothing."""
    return Rx(_group(part) + "?", 0, part.longest)


def joined(item: Rx, sep: Rx, lo: int, hi: int) -> Rx:
    """``lo`` to ``hi`` items (``1 <= lo <= hi``) with ``sep`` between them: ``item (sep item){lo-1,hi-1}``."""
    if not 1 <= lo <= hi:
        raise ValueError(f"joined() needs 1 <= lo <= hi, got {lo}, {hi}")
    if hi == 1:
        return item
    more = _group(seq(sep, item))
    count = f"{{{lo - 1}}}" if lo == hi else f"{{{lo - 1},{hi - 1}}}"
    return Rx(
        _group(item) + more + count,
        lo * item.shortest + (lo - 1) * sep.shortest,
        hi * item.longest + (hi - 1) * sep.longest,
    )


def ordered_subset(items: Sequence[Rx], sep: Rx) -> Rx:
    """A non-empty subsequence of ``items`` in their order, ``sep`` between them: each item at most once,
    never out of order. Built as ``U_i = I_i | (I_i sep)? U_{i+1}``, so the regex grows linearly."""
    if not items:
        raise ValueError("ordered_subset() needs at least one item")
    out = items[-1]
    for item in reversed(items[:-1]):
        out = Rx(
            f"(?:{item.text}|{opt(seq(item, sep)).text}{_group(out)})",
            min(item.shortest, out.shortest),
            item.longest + sep.longest + out.longest,
        )
    return out


def most_repeats(room: int, fixed: int, each: int, sep: int, cap: int) -> int:
    """The most items (at most ``cap``) of ``each`` bytes, ``sep`` bytes between them, that fit in ``room``
    bytes beside ``fixed`` bytes; 0 when not even one fits."""
    if each <= 0:
        return cap
    n = (room - fixed + sep) // (each + sep)
    return max(0, min(cap, n))


# ----------------------------------------------------------------------------------------- numbers
DIGIT = "[0-9]"


def integer(max_digits: int) -> Rx:
    """A non-negative integer without leading zeros, at most ``max_digits`` digits (``json.dumps`` form)."""
    if max_digits <= 1:
        return chars(f"{DIGIT}")
    return alt([lit("0"), seq(chars("[1-9]"), chars(DIGIT, 0, max_digits - 1))])


def decimal(max_digits: int, max_decimals: int, signed: bool = True) -> Rx:
    """An integer part of at most ``max_digits`` digits, then an optional fraction of 1 to ``max_decimals``
    digits (none when ``max_decimals`` is 0), with an optional ``-`` when ``signed``."""
    parts = [opt(lit("-"))] if signed else []
    parts.append(integer(max_digits))
    if max_decimals > 0:
        parts.append(opt(seq(lit("."), chars(DIGIT, 1, max_decimals))))
    return seq(*parts)


def fit_decimal(
    room: int, max_digits: int, max_decimals: int, min_digits: int = 1, min_decimals: int = 0
) -> Rx:
    """The widest :func:`decimal` that fits ``room`` bytes: fewer decimals first, then fewer integer digits,
    then no sign; never fewer than ``min_digits`` / ``min_decimals`` (then signed, even if it does not fit)."""
    min_digits, min_decimals = max(1, min_digits), max(0, min_decimals)
    digits, decimals = max(min_digits, max_digits), max(min_decimals, max_decimals)
    while True:
        for signed in (True, False):
            rx = decimal(digits, decimals, signed)
            if rx.longest <= room:
                return rx
        if decimals > min_decimals:
            decimals -= 1
        elif digits > min_digits:
            digits -= 1
        else:
            return decimal(min_digits, min_decimals, True)


# Integers on Qwen3-VL's 0-1000 grid, as json.dumps writes them.
GRID_INT = alt([lit("1000"), seq(chars("[1-9]"), chars(DIGIT, 0, 2)), lit("0")])


# ------------------------------------------------------------------------------------------------ boxes
MAX_PIXEL_DIGITS = 5  # pixel coordinates of images up to 99,999 px
SEP = lit(", ")  # json.dumps' separator between list items and object entries


def coordinate(hints: AnswerHints) -> Rx:
    """One box coordinate as the training targets write it: an integer on the 0-1000 grid (``qwen1000``), or
    a pixel value with as many decimals as the training answers use (2 when unknown)."""
    if hints.box_format == BOX_QWEN1000:
        return GRID_INT
    decimals = hints.max_decimals if hints.n_answers else 2
    return decimal(max(MAX_PIXEL_DIGITS, hints.max_digits), decimals, signed=False)


def box(hints: AnswerHints) -> Rx:
    """``[x1, y1, x2, y2]`` as ``json.dumps`` writes it."""
    return seq(lit("["), joined(coordinate(hints), SEP, 4, 4), lit("]"))


def box_list(one_box: Rx, max_boxes: int) -> Rx:
    """``[]`` or ``[box, box, ...]`` with at most ``max_boxes`` boxes (``[]`` only when 0)."""
    if max_boxes < 1:
        return lit("[]")
    return seq(lit("["), opt(joined(one_box, SEP, 1, max_boxes)), lit("]"))
