"""Counting: the answer is a whole number; scored by mean absolute error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qwenvl.flare.answers import read_count, tidy_number
from qwenvl.flare.metrics import mae_metrics
from qwenvl.flare.parsing import parse_number
from qwenvl.flare.tasks.base import TaskType


class Counting(TaskType):
    name = "counting"
    metric_columns = ("mae", "mae_penalized", "unparsable_share")
    main_metric = "mae"
    higher_is_better = False
    max_new_tokens = 16

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return read_count(answer)

    def parse(self, answer: object, question: str | None = None) -> float | None:
        return parse_number(answer)

    def challenge_answer(self, value: Any, text: str, meta: dict) -> Any:
        return tidy_number(value)

    def metrics(self, gts: Sequence[Any], preds: Sequence[Any], green=None) -> dict[str, Any]:
        return mae_metrics(gts, preds)


TASK = Counting()
