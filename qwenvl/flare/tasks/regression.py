"""Regression: the answer is a decimal number (a distance, an angle...); scored by mean absolute error."""

from __future__ import annotations

from typing import Any

from qwenvl.flare.answers import format_number, read_number
from qwenvl.flare.tasks.base import NumericTask


class Regression(NumericTask):
    name = "regression"

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return format_number(read_number(answer))


TASK = Regression()
