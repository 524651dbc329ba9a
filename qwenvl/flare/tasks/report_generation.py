"""Report generation: the answer is free text; scored by BLEU-4 and ROUGE-L (lexical stand-ins), and by the
challenge's GREEN score only when a local GREEN judge model is given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qwenvl.flare import metrics as M
from qwenvl.flare.answers import answer_text
from qwenvl.flare.parsing import clean_text
from qwenvl.flare.tasks.base import TaskType


def parse_report(answer: object) -> str | None:
    """A report as stripped text (special tokens and code fences removed), ``None`` when empty."""
    if not isinstance(answer, str):
        return None
    text = clean_text(answer)
    return text or None


class ReportGeneration(TaskType):
    name = "report_generation"
    metric_columns = ("bleu4", "rougeL", "green", "green_n_failed")
    main_metric = "rougeL"
    max_new_tokens = 256
    judged = True
    note = (
        "report_generation: bleu4 and rougeL are lexical stand-ins, not the challenge's GREEN score; "
        "'green' appears only when a local GREEN model was given."
    )

    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        return answer_text(answer)

    def parse(self, answer: object, question: str | None = None) -> str | None:
        return parse_report(answer)

    reward_note = "ROUGE-L F1 against the reference report: a lexical stand-in, not GREEN"

    def reward(
        self, value: Any, reference: Any, question: str | None = None, *, iou_threshold: float = 0.5
    ) -> float:
        """ROUGE-L F1 of this report (:func:`~qwenvl.flare.metrics.rouge_l` on one sample): a lexical
        stand-in for the challenge's GREEN score, which needs a 7B judge model per rollout."""
        if value is None:
            return 0.0
        return float(M.rouge_l([reference], [value]))

    def metrics(self, gts: Sequence[Any], preds: Sequence[Any], green=None) -> dict[str, Any]:
        out: dict[str, Any] = {"bleu4": M.bleu4(gts, preds), "rougeL": M.rouge_l(gts, preds)}
        if green is not None:
            scores = [s for s in green if s is not None]
            out["green"] = sum(scores) / len(scores) if scores else None
            out["green_n_failed"] = len(green) - len(scores)
        return out


TASK = ReportGeneration()
