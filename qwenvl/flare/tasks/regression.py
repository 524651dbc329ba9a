"""Regression: the answer is a decimal number (a distance, an angle...); scored by mean absolute error."""

from __future__ import annotations

from typing import Any

from qwenvl.flare.answers import format_number, read_number
from qwenvl.flare.patterns import NO_HINTS, AnswerHints, fit_decimal
from qwenvl.flare.tasks.base import NumericTask

MIN_DIGITS = 6  # integer digits a constrained number may have even if no training answer had as many
MIN_DECIMALS = 4  # digits after the decimal point, likewise


class Regression(NumericTask):
    name = "regression"

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return format_number(read_number(answer))

    def answer_pattern(
        self, question: str | None, hints: AnswerHints = NO_HINTS, max_bytes: int | None = None
    ) -> str | None:
        """A decimal number as ``format_number`` writes it (``45``, ``-12.5``; no exponent): one integer digit
        more than the training answers have (at least 6) and as many decimals (at least 4); fewer decimals,
        then fewer digits, when ``max_bytes`` is smaller, but never fewer than the training answers use."""
        digits = max(hints.max_digits + 1, MIN_DIGITS)
        decimals = max(hints.max_decimals, MIN_DECIMALS)
        room = max_bytes if max_bytes is not None else 10**9
        return fit_decimal(room, digits, decimals, hints.max_digits, hints.max_decimals).text


TASK = Regression()
