"""Detection: the answer is a list of ``[x1, y1, x2, y2]`` boxes; scored by F1 at IoU > 0.5."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qwenvl.flare import metrics as M
from qwenvl.flare.answers import boxes_target, read_box_list, read_literal, target_boxes_problem
from qwenvl.flare.boxes import format_boxes, record_boxes_to_pixels
from qwenvl.flare.parsing import parse_boxes
from qwenvl.flare.tasks.base import TaskType


class Detection(TaskType):
    name = "detection"
    metric_columns = ("f1", "precision", "recall", "tp", "fp", "fn")
    main_metric = "f1"
    max_new_tokens = 256  # about 20 tokens a box
    has_boxes = True

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return boxes_target(read_box_list(read_literal(answer)), size, box_format)

    def target_problem(self, answer: str, box_format: str | None) -> str | None:
        return target_boxes_problem(self.name, answer, box_format, by_instance=False)

    def parse(self, answer: object, question: str | None = None) -> list | None:
        return parse_boxes(answer)

    def challenge_answer(self, value: Any, text: str, meta: dict) -> Any:
        return format_boxes(record_boxes_to_pixels(value, meta))

    def metrics(self, gts: Sequence[Any], preds: Sequence[Any], green=None) -> dict[str, Any]:
        return M.detection_f1(gts, preds)


TASK = Detection()
