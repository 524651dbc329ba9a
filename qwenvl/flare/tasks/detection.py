"""Detection: the answer is a list of ``[x1, y1, x2, y2]`` boxes; scored by F1 at IoU > 0.5."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qwenvl.flare import metrics as M
from qwenvl.flare.answers import boxes_target, read_box_list, read_literal
from qwenvl.flare.parsing import parse_boxes
from qwenvl.flare.patterns import NO_HINTS, AnswerHints, box, box_list, most_repeats, number_widths
from qwenvl.flare.tasks.box_task import BoxTask


class Detection(BoxTask):
    name = "detection"
    max_new_tokens = 256  # about 20 tokens a box
    max_boxes = 100  # the most boxes a constrained answer may hold, whatever the budget
    min_boxes = 4  # boxes a constrained answer may always hold (twice the training answers' most, if more)

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return boxes_target(read_box_list(read_literal(answer)), size, box_format)

    def answer_hints(self, targets: Sequence[str], questions: Sequence[str] = ()) -> AnswerHints:
        digits, decimals = number_widths(targets)
        counts = [len(b) for b in (parse_boxes(t) for t in targets) if b is not None]
        return AnswerHints(
            max_items=max(counts, default=0), max_digits=digits, max_decimals=decimals, n_answers=len(targets)
        )

    def answer_pattern(
        self, question: str | None, hints: AnswerHints = NO_HINTS, max_bytes: int | None = None
    ) -> str | None:
        """A JSON list of ``[x1, y1, x2, y2]`` boxes (integers on the 0-1000 grid, or pixels for a dataset
        converted with ``--box_format pixel``), ``[]`` included, with as many boxes as fit ``max_bytes``,
        but at least twice as many as a training answer holds and :attr:`min_boxes` when there are training
        answers (an image may show more than the training images did), and at most :attr:`max_boxes`."""
        one = box(hints)
        room = max_bytes if max_bytes is not None else 10**9
        n = most_repeats(room, 2, one.longest, 2, self.max_boxes)
        floor = max(2 * hints.max_items, self.min_boxes) if hints.n_answers else 0
        return box_list(one, max(n, min(floor, self.max_boxes))).text

    def parse(self, answer: object, question: str | None = None) -> list | None:
        return parse_boxes(answer)

    def fallback_answer(self, question: str | None, vocabulary: Any = None) -> Any:
        return "[]"  # no box: costs recall, never a parse failure

    def metrics(self, gts: Sequence[Any], preds: Sequence[Any], green=None) -> dict[str, Any]:
        return M.detection_f1(gts, preds)

    reward_note = "F1 of the boxes, a match at IoU > threshold (0.5, or the loose-to-strict schedule)"

    def box_f1(self, gts: Sequence[Any], preds: Sequence[Any], thr: float) -> dict[str, Any]:
        return M.detection_f1(gts, preds, thr)


TASK = Detection()
