"""What the two box task types share: F1 metrics, boxes on the 0-1000 grid in training and pixels in the
challenge, a prompt that states the grid, an empty box list as the answer that always parses."""

from __future__ import annotations

from typing import Any, ClassVar

from qwenvl.flare.answers import target_boxes_problem
from qwenvl.flare.boxes import format_boxes, record_boxes_to_pixels
from qwenvl.flare.tasks.base import TaskType
from qwenvl.flare.tasks.box_prompt import grid_prompt


class BoxTask(TaskType):
    """Detection and instance detection."""

    metric_columns = ("f1", "precision", "recall", "tp", "fp", "fn")
    main_metric = "f1"
    has_boxes = True
    by_instance: ClassVar[bool] = False  # answers are an object instance id -> box list

    def target_problem(self, answer: str, box_format: str | None) -> str | None:
        return target_boxes_problem(self.name, answer, box_format, by_instance=self.by_instance)

    def prompt(self, question: str, box_format: str | None) -> str:
        return grid_prompt(question, box_format)[0]

    def prompt_rule(self, question: str, box_format: str | None) -> str:
        return grid_prompt(question, box_format)[1]

    def challenge_answer(self, value: Any, text: str, meta: dict) -> Any:
        return format_boxes(record_boxes_to_pixels(value, meta))
