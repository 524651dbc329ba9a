"""Counting: the answer is a whole number; scored by mean absolute error."""

from __future__ import annotations

from typing import Any

from qwenvl.flare.answers import read_count
from qwenvl.flare.tasks.base import NumericTask


class Counting(NumericTask):
    name = "counting"

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return read_count(answer)


TASK = Counting()
