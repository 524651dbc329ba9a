"""What the two box task types share: F1 metrics, boxes on the 0-1000 grid in training and pixels in the
challenge, a prompt that states the grid, an empty box list as the answer that always parses."""

from __future__ import annotations

from collections.abc import Sequence
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

    def box_f1(self, gts: Sequence[Any], preds: Sequence[Any], thr: float) -> dict[str, Any]:
        """The challenge's F1 counts of parsed answers at IoU threshold ``thr`` (its metric, per task)."""
        raise NotImplementedError

    def reward(
        self, value: Any, reference: Any, question: str | None = None, *, iou_threshold: float = 0.5
    ) -> float:
        """The challenge's F1 of this one answer's boxes (:meth:`box_f1` on one sample, boxes on the same
        grid as the reference): 1.0 when both list no box, 0.0 when only one does."""
        if value is None:
            return 0.0
        return float(self.box_f1([reference], [value], iou_threshold)["f1"])

    def target_problem(self, answer: str, box_format: str | None) -> str | None:
        return target_boxes_problem(self.name, answer, box_format, by_instance=self.by_instance)

    def prompt(self, question: str, box_format: str | None) -> str:
        return grid_prompt(question, box_format)[0]

    def prompt_rule(self, question: str, box_format: str | None) -> str:
        return grid_prompt(question, box_format)[1]

    def challenge_answer(self, value: Any, text: str, meta: dict) -> Any:
        return format_boxes(record_boxes_to_pixels(value, meta))
