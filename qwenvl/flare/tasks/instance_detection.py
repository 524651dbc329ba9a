"""Instance detection: the answer maps instance ids to box lists (``{"1": [[x1, y1, x2, y2]], ...}``);
scored by F1 per instance id at IoU >= 0.5."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qwenvl.flare import metrics as M
from qwenvl.flare.answers import boxes_target, read_instance_boxes, read_literal, target_boxes_problem
from qwenvl.flare.boxes import format_boxes, record_boxes_to_pixels
from qwenvl.flare.parsing import parse_instances
from qwenvl.flare.tasks.base import TaskType


class InstanceDetection(TaskType):
    name = "instance_detection"
    metric_columns = ("f1", "precision", "recall", "tp", "fp", "fn")
    main_metric = "f1"
    max_new_tokens = 1024  # a karyotype holds dozens of boxes
    has_boxes = True

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return boxes_target(read_instance_boxes(read_literal(answer)), size, box_format)

    def target_problem(self, answer: str, box_format: str | None) -> str | None:
        return target_boxes_problem(self.name, answer, box_format, by_instance=True)

    def parse(self, answer: object, question: str | None = None) -> dict | None:
        return parse_instances(answer)

    def challenge_answer(self, value: Any, text: str, meta: dict) -> Any:
        return format_boxes(record_boxes_to_pixels(value, meta))

    def metrics(self, gts: Sequence[Any], preds: Sequence[Any], green=None) -> dict[str, Any]:
        return M.instance_detection_f1(gts, preds)


TASK = InstanceDetection()
