"""What a FLARE25 task type is: the one interface every task module implements.

A task type owns everything that differs between, say, classification and instance detection: how a raw
challenge answer becomes a training target, how a model answer is read back, how it is written as a challenge
answer, which metrics score it and which one is its main metric, and how many new tokens an answer may take.
The rest of the toolkit asks the task (``task_for(name)``) instead of branching on its name, so adding a task
type is one module in this package, its tests and a demo builder (``data_conversion/demo_tree``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from qwenvl.flare.answers import tidy_number
from qwenvl.flare.metrics import mae_metrics
from qwenvl.flare.parsing import clean_text, parse_number, parse_options
from qwenvl.flare.patterns import NO_HINTS, AnswerHints, number_widths
from qwenvl.flare.schema import PROMPT_VERBATIM

FALLBACK_TEXT = "No abnormality detected."  # TaskType.fallback_answer of a free-text task without options


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
    reward_note: ClassVar[str]  # one line: what :meth:`reward` scores (README reward table, GRPO run log)

    # ------------------------------------------------------------------ conversion (raw answer -> target)
    def target(self, answer: Any, size: tuple[int, int], box_format: str) -> str:
        """The training target string of a labelled raw answer. ``size`` is the first image's displayed
        (width, height), for box tasks. Raises :class:`qwenvl.flare.answers.AnswerError`."""
        raise NotImplementedError

    def target_problem(self, answer: str, box_format: str | None) -> str | None:
        """Why a converted record's non-empty answer is not a valid target of this task, or ``None``
        (the converted-file validator asks this). Default: any text is."""
        return None

    def raw_answer_problem(self, answer: Any, question: str | None) -> tuple[str, str] | None:
        """Known noise in a labelled raw answer that :meth:`target` accepts: ``(reason, detail)`` with a
        reason of :data:`qwenvl.flare.schema.NOISE_REASONS` (the converter skips such a record unless
        ``--keep_noisy``; the validator warns), or ``None``. Default: no noise is known."""
        return None

    # ------------------------------------------------------------------- the prompt (question -> model text)
    def prompt(self, question: str, box_format: str | None) -> str:
        """The text the model is shown for a raw ``question`` whose answers use ``box_format``: the converted
        record's human turn (training, evaluation) and the submission's prompt of a raw test question.
        Default: the question verbatim."""
        return question

    def prompt_rule(self, question: str, box_format: str | None) -> str:
        """The name of the rule :meth:`prompt` applies to ``question`` (``meta.prompt_rule``, counted in the
        conversion report): :data:`PROMPT_VERBATIM` when the question is shown as written."""
        return PROMPT_VERBATIM

    # ---------------------------------------------------------------- reading answers (tolerant, None = bad)
    def parse(self, answer: object, question: str | None = None) -> Any:
        """The normalised value of a model (or prediction) answer, ``None`` when unparsable. ``question``
        supplies the options of option tasks."""
        raise NotImplementedError

    def parse_reference(self, answer: object, question: str | None = None) -> Any:
        """The normalised value of a ground-truth answer (by default read like a model answer)."""
        return self.parse(answer, question)

    def read_answer(self, answer: object, question: str | None = None) -> Any:
        """The value a challenge ``Answer`` is scored on, as the organisers read it (``None`` = nothing to
        score). Default: :meth:`parse` (numbers, boxes, reports); option tasks compare text as the challenge
        does (:class:`~qwenvl.flare.tasks.options.OptionTask`)."""
        return self.parse(answer, question)

    # ----------------------------------------------------------------------- the answer vocabulary
    has_vocabulary: ClassVar[bool] = False  # answers name offered options in a dataset's vocabulary

    def learn_vocabulary(self, targets: Sequence[str], questions: Sequence[str | None] = ()) -> Any:
        """The :class:`~qwenvl.flare.vocabulary.AnswerVocabulary` of one dataset's labelled answers (option
        tasks); ``None`` for the other task types, whose answers have one form."""
        return None

    def answer_value(self, text: str, question: str | None, vocabulary: Any = None) -> Any:
        """The challenge's reading of the answer the toolkit writes for model ``text``: what a reward compares
        with the reference (``None`` = unparsable). Default: :meth:`parse`."""
        return self.parse(text, question)

    # -------------------------------------------------------------------------- the decoding constraint
    def answer_hints(self, targets: Sequence[str], questions: Sequence[str] = ()) -> AnswerHints:
        """What the training targets ``targets`` (converted answers of one dataset) and their ``questions``
        say about the answers' form, for :meth:`answer_pattern`. Default: nothing."""
        return AnswerHints(n_answers=len(targets))

    def answer_pattern(
        self, question: str | None, hints: AnswerHints = NO_HINTS, max_bytes: int | None = None
    ) -> str | None:
        """A bounded regular expression, as a plain string (the syntax of :mod:`qwenvl.flare.patterns`), that
        every answer to ``question`` must match in full: it accepts the form of this task's training targets
        (:meth:`target`) and nothing :meth:`parse` rejects; ``None`` = free text. ``max_bytes``: the room an
        answer has in UTF-8 bytes (its token budget less the end-of-turn token); repetitions (boxes, labels,
        digits) are bounded to fit it, but never below what the training answers in ``hints`` need, so a
        pattern may be longer: the caller then raises the budget to the longest match
        (:func:`qwenvl.flare.patterns.longest_match_bytes`), and no answer is cut at the budget."""
        return None

    # --------------------------------------------------------------------------- class-balanced drawing
    def balance_classes(self, targets: Sequence[str]) -> list[str | None]:
        """The class each of one dataset's training targets is balanced by when the dataset is drawn
        ``+balanced`` (:mod:`qwenvl.data.mixture`), ``None`` for a target without one. Default: no classes (a
        task whose metric does not weigh classes equally)."""
        return [None] * len(targets)

    # ------------------------------------------------------------------------ the constant-answer baseline
    def constant_answer(self, targets: Sequence[str]) -> str | None:
        """The one answer, in training-target form, that scores best when given to every record of a
        dataset whose training targets are ``targets`` (the constant-answer baseline); ``None`` when there
        are none. Default: the most frequent target, the earliest of equally frequent ones (a class prior; for
        box and free-text tasks the most common box list or report)."""
        counts: dict[str, int] = {}
        for target in targets:
            counts[target] = counts.get(target, 0) + 1
        return max(counts, key=counts.__getitem__) if counts else None

    # -------------------------------------------------------------------- writing the challenge answer
    def challenge_answer(self, value: Any, text: str, meta: dict) -> Any:
        """The challenge ``Answer`` for a parsed model answer ``value`` (never ``None``) of model text
        ``text`` on the converted record whose ``meta`` is given. Default: the model's own wording."""
        return clean_text(text)

    def fallback_answer(self, question: str | None, vocabulary: Any = None) -> Any:
        """A well-formed challenge ``Answer`` (one :meth:`parse` reads) for when the model gave none that
        parses, or could not see the image: the organisers' scorer must read every answer (one non-number
        makes a task's MAE infinite). Default: the first option letter the question offers, else a neutral
        sentence (a report); option tasks write the first option in ``vocabulary``."""
        options = parse_options(question)
        return next(iter(options)) if options else FALLBACK_TEXT

    # ------------------------------------------------------------------------------------------- scoring
    def metrics(
        self, gts: Sequence[Any], preds: Sequence[Any], green: Sequence[float | None] | None = None
    ) -> dict[str, Any]:
        """The metric values of one group of parsed ground truths and predictions (``None`` = unparsable or
        missing). ``green``: per-item judge scores, only for :attr:`judged` tasks when a judge ran."""
        raise NotImplementedError

    def reward(
        self, value: Any, reference: Any, question: str | None = None, *, iou_threshold: float = 0.5
    ) -> float:
        """The reward in [0, 1] of one parsed model answer ``value`` (``None`` = unparsable: 0.0) against the
        parsed reference (:meth:`parse_reference`, never ``None``), by the challenge's definition of this
        task's metric applied to the one sample (GRPO, ``qwenvl.flare.rewards``). ``iou_threshold``: the IoU
        a box must pass to count (box tasks only; ``qwenvl.flare.rewards.iou_threshold_at`` schedules it)."""
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

    def fallback_answer(self, question: str | None, vocabulary: Any = None) -> Any:
        return 0

    def answer_hints(self, targets: Sequence[str], questions: Sequence[str] = ()) -> AnswerHints:
        digits, decimals = number_widths(targets)
        return AnswerHints(max_digits=digits, max_decimals=decimals, n_answers=len(targets))

    def constant_answer(self, targets: Sequence[str]) -> str | None:
        """The lower median of the targets that parse (it minimises the mean absolute error, and is a
        training target, so an integer for counting), as that target is written; ``None`` when none parse."""
        pairs = sorted((v, t) for v, t in ((parse_number(t), t) for t in targets) if v is not None)
        return pairs[(len(pairs) - 1) // 2][1] if pairs else None

    reward_note = "1 / (1 + |err| / max(|ref|, 1)): 1 when exact, 0.5 at an error as large as the reference"

    def metrics(
        self, gts: Sequence[Any], preds: Sequence[Any], green: Sequence[float | None] | None = None
    ) -> dict[str, Any]:
        return mae_metrics(gts, preds)

    def reward(
        self, value: Any, reference: Any, question: str | None = None, *, iou_threshold: float = 0.5
    ) -> float:
        """A bounded score of the absolute error: ``1 / (1 + |value - reference| / scale)`` with ``scale =
        max(|reference|, 1)``, so 1.0 when exact, falling monotonically with the error, an error as large as
        the reference scoring 0.5 whatever the unit (a count of 3, a distance of 40 mm) and small references
        (0, a count of 1) judged on an absolute scale of 1."""
        if value is None or not math.isfinite(value):
            return 0.0
        scale = max(abs(float(reference)), 1.0)
        return 1.0 / (1.0 + abs(float(value) - float(reference)) / scale)
