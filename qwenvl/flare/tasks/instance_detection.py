"""Instance detection: the answer maps instance ids to box lists (``{"1": [[x1, y1, x2, y2]], ...}``);
scored by F1 per instance id at IoU >= 0.5."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from qwenvl.flare import metrics as M
from qwenvl.flare.answers import boxes_target, read_instance_boxes, read_literal
from qwenvl.flare.parsing import parse_instances
from qwenvl.flare.patterns import (
    NO_HINTS,
    SEP,
    AnswerHints,
    Rx,
    alt,
    box,
    box_list,
    item_order,
    joined,
    lit,
    most_repeats,
    number_widths,
    opt,
    ordered_subset,
    seq,
)
from qwenvl.flare.tasks.box_task import BoxTask

# An instance id the model makes up when the training answers name none: a quoted short name.
_FREE_ID = Rx('"[0-9A-Za-z_-]{1,8}"', 3, 10)


def _instances(entries: Rx | None) -> Rx:
    """``{}`` or ``{entries}`` (only ``{}`` when ``entries`` is ``None``)."""
    return seq(lit("{"), opt(entries), lit("}")) if entries is not None else lit("{}")


class InstanceDetection(BoxTask):
    name = "instance_detection"
    by_instance = True
    # A 46-chromosome karyotype is about 1,100 tokens; held to the pattern with ids it does not know (no
    # converted training answers), up to 24 ids of 2 boxes take up to 1,600 bytes.
    max_new_tokens = 2048
    max_instances = 64  # the most ids a constrained answer may hold when the training ids are unknown
    max_boxes_per_instance = 8  # the most boxes of one id in a constrained answer
    default_boxes_per_instance = 2  # boxes per id when no training answer says (a chromosome pair)

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return boxes_target(read_instance_boxes(read_literal(answer)), size, box_format)

    def answer_hints(self, targets: Sequence[str], questions: Sequence[str] = ()) -> AnswerHints:
        answers = [v for v in (parse_instances(t) for t in targets) if v is not None]
        ids, ordered = item_order([list(a) for a in answers])
        digits, decimals = number_widths(targets)
        return AnswerHints(
            labels=ids,
            ordered=ordered,
            separator=", ",
            max_items=max((len(v) for a in answers for v in a.values()), default=0),
            max_digits=digits,
            max_decimals=decimals,
            n_answers=len(targets),
        )

    def answer_pattern(
        self, question: str | None, hints: AnswerHints = NO_HINTS, max_bytes: int | None = None
    ) -> str | None:
        """A JSON object from instance id to a box list (``{}`` included). With the training answers' ids in
        one order: each id at most once, in that order, with as many boxes per id as fit ``max_bytes`` but
        at least one more than a training answer gives one id. Otherwise: the training ids (or made-up short
        ids) in any order, each with up to one box more than a training answer gives one id (2 without
        training answers), as many entries as fit but at least one per training id (ids may then repeat)."""
        one = box(hints)
        room = max_bytes if max_bytes is not None else 10**9
        cap_k = self.max_boxes_per_instance
        floor_k = min(hints.max_items + 1, cap_k) if hints.n_answers else 0
        ids = [lit(json.dumps(i) + ": ") for i in hints.labels]
        if ids and hints.ordered:
            n = len(ids)
            fixed = 2 + sum(i.longest for i in ids) + 2 * (n - 1)
            k = max(most_repeats(room, fixed, n * (one.longest + 2), 0, cap_k), floor_k)
            if k >= 1:
                entries = [seq(i, box_list(one, k)) for i in ids]
                return _instances(ordered_subset(entries, SEP)).text
        key = seq(alt([lit(json.dumps(i)) for i in hints.labels]) if ids else _FREE_ID, lit(": "))
        cap = len(ids) or self.max_instances
        per_id = max(1, floor_k if hints.n_answers else self.default_boxes_per_instance)
        entry = seq(key, box_list(one, per_id))
        m = max(most_repeats(room, 2, entry.longest, 2, cap), len(ids))
        return _instances(joined(entry, SEP, 1, m) if m >= 1 else None).text

    def parse(self, answer: object, question: str | None = None) -> dict | None:
        return parse_instances(answer)

    def fallback_answer(self, question: str | None, vocabulary: Any = None) -> Any:
        return "{}"  # no instance: costs recall, never a parse failure

    def metrics(self, gts: Sequence[Any], preds: Sequence[Any], green=None) -> dict[str, Any]:
        return M.instance_detection_f1(gts, preds)

    reward_note = "F1 per instance id, a match at IoU >= threshold (0.5, or the loose-to-strict schedule)"

    def box_f1(self, gts: Sequence[Any], preds: Sequence[Any], thr: float) -> dict[str, Any]:
        return M.instance_detection_f1(gts, preds, thr)


TASK = InstanceDetection()
