"""What a FLARE25 task type is: the one interface every task module implements.

A task type owns everything that differs between, say, classification and instance detection: how a raw
challenge answer becomes a training target, how a model answer is read back, how it is written as a challenge
answer, which metrics score it and which one is its main metric, and how many new tokens an answer may take.
The rest of the toolkit asks the task (``task_for(name)``) instead of branching on its name, so adding a task
type is one module in this package, its tests and a demo builder (``data_conversion/demo_tree``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from qwenvl.flare.answers import tidy_number
from qwenvl.flare.metrics import mae_metrics
from qwenvl.flare.parsing import clean_text, parse_number


class TaskType:
    """One FLARE25 task type. Subclasses set the class attributes and implement :meth:`target`,
    :meth:`parse` and :meth:`metrics`; the other methods have defaults that suit most tasks."""

    name: ClassVar[str]  # normalised name, as in meta.task_type ("classification")
    metric_columns: ClassVar[tuple[str, ...]]  # the metric keys it reports, in table order
    main_metric: ClassVar[str]  # the one it is ranked by
    higher_is_better: ClassVar[bool] = True
    max_new_tokens: ClassVar[int]  # default generation budget for one answer
    has_boxes: ClassVar[bool] = False  # answers are boxes (0-1000 grid in training, pixels in the challenge)
    judged: ClassVar[bool] = False  # scored by a judge model (GREEN) when one is given
    note: ClassVar[str | None] = None  # a caveat shown beside its metrics

    # ------------------------------------------------------------------ conversion (raw answer -> target)
    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        """The training target string of a labelled raw answer. ``size`` is the first image's displayed
        (width, height), for box tasks. Raises :class:`qwenvl.flare.answers.AnswerError`."""
        raise NotImplementedError

    def target_problem(self, answer: str, box_format: str | None) -> str | None:
        """Why a converted record's non-empty answer is not a valid target of this task, or ``None``
        (the converted-file validator asks this). Default: any text is."""
        return None

    # ---------------------------------------------------------------- reading answers (tolerant, None = bad)
    def parse(self, answer: object, question: str | None = None) -> Any:
        """The normalised value of a model (or prediction) answer, ``None`` when unparsable. ``question``
        supplies the options of option tasks."""
        raise NotImplementedError

    def parse_reference(self, answer: object, question: str | None = None) -> Any:
        """The normalised value of a ground-truth answer (by default read like a model answer)."""
        return self.parse(answer, question)

    # -------------------------------------------------------------------- writing the challenge answer
    def challenge_answer(self, value: Any, text: str, meta: dict) -> Any:
        """The challenge ``Answer`` for a parsed model answer ``value`` (never ``None``) of model text
        ``text`` on the converted record whose ``meta`` is given. Default: the model's own wording."""
        return clean_text(text)

    # ------------------------------------------------------------------------------------------- scoring
    def metrics(
        self, gts: Sequence[Any], preds: Sequence[Any], green: Sequence[float | None] | None = None
    ) -> dict[str, Any]:
        """The metric values of one group of parsed ground truths and predictions (``None`` = unparsable or
        missing). ``green``: per-item judge scores, only for :attr:`judged` tasks when a judge ran."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<task type {self.name}>"


class NumericTask(TaskType):
    """A task whose answer is one number (counting, regression): read as the first number in the text,
    written back as a number, scored by mean absolute error."""

    metric_columns = ("mae", "mae_penalized", "unparsable_share")
    main_metric = "mae"
    higher_is_better = False
    max_new_tokens = 16

    def parse(self, answer: object, question: str | None = None) -> float | None:
        return parse_number(answer)

    def challenge_answer(self, value: Any, text: str, meta: dict) -> Any:
        return tidy_number(value)

    def metrics(
        self, gts: Sequence[Any], preds: Sequence[Any], green: Sequence[float | None] | None = None
    ) -> dict[str, Any]:
        return mae_metrics(gts, preds)
