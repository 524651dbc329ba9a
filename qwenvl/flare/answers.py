"""Reading the raw FLARE25 answers of labelled records, strictly: a value that cannot be read raises
:class:`AnswerError` (the converter then skips the record with reason ``unparsable_answer``).

This is the converter's side. Model answers are read tolerantly (``None`` when unreadable) by
:mod:`qwenvl.flare.parsing` and the task types.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from qwenvl.flare.boxes import GRID, convert_boxes, is_box
from qwenvl.flare.schema import BOX_QWEN1000


class AnswerError(ValueError):
    """A raw answer that cannot be read for its task type."""


_INT_RE = re.compile(r"^[+-]?\d+$")
_NUM_GAP_RE = re.compile(r"(?<=[\d.])\s+(?=[-+\d.])")
_BRACKET_GAP_RE = re.compile(r"\]\s*\[")


def answer_text(answer: Any) -> str:
    """A raw answer as a stripped string; non-strings are written as JSON (``7`` -> ``"7"``), never repr."""
    if answer is None:
        return ""
    if isinstance(answer, str):
        return answer.strip()
    return json.dumps(answer, ensure_ascii=False)


def read_number(answer: Any) -> float:
    """A finite number from an int/float or a numeric string (surrounding spaces and a trailing ``%`` allowed)."""
    if isinstance(answer, bool):
        raise AnswerError(f"expected a number, got the boolean {json.dumps(answer)}")
    if isinstance(answer, (int, float)):
        value = float(answer)
    elif isinstance(answer, str):
        text = answer.strip().removesuffix("%").strip()
        try:
            value = float(int(text)) if _INT_RE.match(text) else float(text)
        except ValueError:
            raise AnswerError(f"expected a number, got {answer!r}") from None
    else:
        raise AnswerError(f"expected a number, got {json.dumps(answer)}")
    if not math.isfinite(value):
        raise AnswerError(f"expected a finite number, got {answer!r}")
    return value


def format_number(value: float) -> str:
    """``45.0`` -> ``"45"``, ``12.5`` -> ``"12.5"`` (shortest round-tripping form)."""
    return str(int(value)) if value.is_integer() else repr(value)


def read_count(answer: Any) -> str:
    """A counting answer as an integer string."""
    value = read_number(answer)
    if not value.is_integer() or value < 0:
        raise AnswerError(f"a count must be a whole number >= 0, got {answer!r}")
    return str(int(value))


def read_literal(answer: Any) -> Any:
    """A box answer as Python data: lists/dicts pass through; strings are read as JSON, then as a Python
    literal, then with whitespace-separated numbers (``[[1 2 3 4]\\n [5 6 7 8]]``) given commas."""
    if not isinstance(answer, str):
        return answer
    text = answer.strip()
    candidates = [text, _BRACKET_GAP_RE.sub("],[", _NUM_GAP_RE.sub(",", text))]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
        try:
            return ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    raise AnswerError(f"not a JSON / Python literal: {clip_text(text)}")


def _checked_box(box: Any, where: str) -> list[float]:
    if not is_box(box):
        raise AnswerError(
            f"{where}: expected a box [x1, y1, x2, y2] of 4 numbers, got {clip_text(json.dumps(box))}"
        )
    if not all(math.isfinite(v) for v in box):
        raise AnswerError(f"{where}: box has a non-finite coordinate: {box}")
    return list(box)


def read_box_list(value: Any, where: str = "answer") -> list[list[float]]:
    """A detection answer as a list of boxes; a single flat box ``[x1, y1, x2, y2]`` is wrapped."""
    if is_box(value):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise AnswerError(
            f"{where}: expected a list of boxes, got {clip_text(json.dumps(value, default=str))}"
        )
    return [_checked_box(b, f"{where}[{i}]") for i, b in enumerate(value)]


def read_instance_boxes(value: Any) -> dict[str, list[list[float]]]:
    """An instance-detection answer as ``{instance_id: [box, ...]}`` (ids as strings, single boxes wrapped)."""
    if not isinstance(value, dict):
        raise AnswerError(
            f"expected an object instance id -> boxes, got {clip_text(json.dumps(value, default=str))}"
        )
    return {str(k): read_box_list(v, where=f"instance {k}") for k, v in value.items()}


def tidy_number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def tidy_boxes(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: tidy_boxes(v) for k, v in value.items()}
    if is_box(value):
        return [tidy_number(v) for v in value]
    return [tidy_boxes(v) for v in value]


def clip_text(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def boxes_target(boxes: Any, size: tuple[int, int], box_format: str) -> str:
    """Read boxes as the training target: JSON, on the 0-1000 grid of an image of ``size`` (width, height)
    when ``box_format`` is ``qwen1000``, else the pixel values with integral coordinates as integers."""
    if box_format == BOX_QWEN1000:
        boxes = convert_boxes(boxes, size[0], size[1], to_grid=True)
    else:
        boxes = tidy_boxes(boxes)
    return json.dumps(boxes)


def target_boxes_problem(task_name: str, answer: str, box_format: str, by_instance: bool) -> str | None:
    """Why a converted box target is not JSON boxes (integers on the 0-1000 grid when ``box_format`` is
    qwen1000), or ``None``. ``by_instance``: an object instance id -> box list is expected."""
    try:
        value = json.loads(answer)
    except ValueError:
        return f"{task_name} answer is not JSON: {answer[:80]!r}"
    groups = list(value.values()) if by_instance and isinstance(value, dict) else [value]
    boxes = [b for g in groups if isinstance(g, list) for b in g]
    if any(not isinstance(g, list) for g in groups) or not all(is_box(b) for b in boxes):
        return f"{task_name} answer is not a list of [x1, y1, x2, y2] boxes: {answer[:80]!r}"
    if box_format == BOX_QWEN1000:
        off = [b for b in boxes if not all(isinstance(v, int) and 0 <= v <= GRID for v in b)]
        if off:
            return f"box {off[0]} is not integers on the 0-{GRID} grid (meta.box_format is qwen1000)"
    return None
