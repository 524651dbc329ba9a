"""Counting: the answer is a whole number; scored by mean absolute error."""

from __future__ import annotations

from typing import Any

from qwenvl.flare.answers import read_count
from qwenvl.flare.patterns import NO_HINTS, AnswerHints, integer
from qwenvl.flare.tasks.base import NumericTask

MIN_DIGITS = 6  # a constrained count may have this many digits even if no training count had as many


class Counting(NumericTask):
    name = "counting"

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return read_count(answer)

    def answer_pattern(
        self, question: str | None, hints: AnswerHints = NO_HINTS, max_bytes: int | None = None
    ) -> str | None:
        """A whole number without leading zeros: one digit more than the training counts have (at least
        6); fewer when ``max_bytes`` is smaller, but never fewer than the training counts have."""
        digits = max(hints.max_digits + 1, MIN_DIGITS)
        if max_bytes is not None:
            digits = max(min(digits, max_bytes), hints.max_digits)
        return integer(digits).text


TASK = Counting()
