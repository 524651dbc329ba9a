"""Rewards for reinforcement learning on FLARE25's verifiable answers (GRPO): per sample, from the task table.

Each completion earns two rewards, logged under :data:`REWARD_NAMES`:

- ``answer``: :func:`answer_reward`, the challenge's own metric applied to the one sample
  (:meth:`qwenvl.flare.tasks.TaskType.reward`; each task type's :attr:`~qwenvl.flare.tasks.TaskType.reward_note`
  says what it is, :func:`reward_notes` lists them);
- ``format``: :func:`format_reward`, 1.0 when the completion is an answer of its task type in its dataset's
  form (an option task's in the dataset's answer vocabulary, :mod:`qwenvl.flare.vocabulary`).

Completions and references are both in training-target form (boxes on the 0-1000 grid), so IoU is computed
on the grid. Box tasks take an IoU threshold; :func:`iou_threshold_at` schedules it from loose to strict over
training, because a fixed 0.5 gives whole groups of zero reward early on, and GRPO learns nothing from a group
whose rewards are all equal. Everything here is plain Python (no torch); definitions are in docs/metrics.md.

    answer_reward("detection", "[[100, 100, 200, 200]]", "[[110, 100, 210, 200]]")   # 1.0 (IoU 0.82)
    format_reward("classification", "B", "Which? A. x B. y")                          # 1.0 (a letter)
    iou_threshold_at(0.5)                                                               # 0.3
"""

from __future__ import annotations

import math

from qwenvl.flare.tasks import TASKS, task_for
from qwenvl.flare.vocabulary import AnswerVocabulary

ANSWER = "answer"  # the challenge's metric on one sample
FORMAT = "format"  # the completion is an answer in its dataset's form
REWARD_NAMES: tuple[str, ...] = (ANSWER, FORMAT)

IOU_START = 0.1  # the IoU threshold at the start of training (loose: a roughly placed box counts)
IOU_END = 0.5  # ... and at its end: the challenge's threshold


def answer_reward(
    task_type: str,
    completion: str,
    reference: str,
    question: str | None = None,
    *,
    iou_threshold: float = 0.5,
    vocabulary: AnswerVocabulary | None = None,
) -> float:
    """The reward in [0, 1] of one model ``completion`` against the record's ``reference`` answer (its
    training target); ``question`` supplies the options of option tasks. The completion is read as the
    toolkit reads a model answer, written as a challenge answer would be (an option task's in ``vocabulary``,
    its dataset's; default: the vocabulary the reference itself is written in) and compared with the
    reference the challenge's way (:meth:`~qwenvl.flare.tasks.TaskType.answer_value`), so the reward is what
    the challenge would score. An unparsable completion scores 0.0; an unparsable reference is a broken
    record: ``ValueError``."""
    task = task_for(task_type)
    ref = task.parse_reference(reference, question)
    if ref is None:
        raise ValueError(
            f"the reference answer {reference!r} does not parse as a {task.name} answer: the record's "
            "answer is no valid training target (check the converted file with the data check)"
        )
    if task.has_vocabulary and vocabulary is None:
        vocabulary = task.reference_vocabulary(reference, question)
    value = task.answer_value(completion, question, vocabulary)
    reward = task.reward(value, ref, question, iou_threshold=iou_threshold)
    if not 0.0 <= reward <= 1.0:  # a task type's reward out of range is a bug in the task table
        raise AssertionError(f"{task.name} reward {reward} is outside [0, 1]")
    return reward


def format_reward(
    task_type: str,
    completion: str,
    question: str | None = None,
    vocabulary: AnswerVocabulary | None = None,
) -> float:
    """1.0 when ``completion`` is an answer of ``task_type`` in the form its dataset writes, else 0.0: for an
    option task, written in ``vocabulary`` (the dataset's; default: the question's rule) with options the
    question offers (``B, C`` where the dataset answers in letters, not ``Effusion, Cardiomegaly``); for the
    others, it parses (:meth:`~qwenvl.flare.tasks.TaskType.parse`: a box list, an id -> boxes map, a number, a
    non-empty report).

    Not the task's decoding pattern (``answer_pattern``): the pattern also needs the dataset's training hints
    (label order) and without them rejects answers the training targets themselves use."""
    task = task_for(task_type)
    if task.has_vocabulary:
        vocabulary = vocabulary or task.vocabulary_of(None, question)
        return 1.0 if task.in_vocabulary(completion, question, vocabulary) else 0.0
    return 0.0 if task.parse(completion, question) is None else 1.0


def iou_threshold_at(progress: float, start: float = IOU_START, end: float = IOU_END) -> float:
    """The IoU threshold of box rewards at training ``progress`` (0 = first step, 1 = last; clamped to
    [0, 1]): linear from ``start`` to ``end``. Starting loose gives a model whose boxes are still rough a
    reward that differs between its completions (a learning signal), and ending at 0.5 optimises the
    challenge's own threshold; pass ``start == end`` for a fixed threshold."""
    if math.isnan(progress):
        raise ValueError("training progress is NaN; expected a number in [0, 1]")
    p = min(max(progress, 0.0), 1.0)
    return start + (end - start) * p


def reward_notes() -> dict[str, str]:
    """What the ``answer`` reward is for each task type, in table order (README, the GRPO run log)."""
    return {name: task.reward_note for name, task in TASKS.items()}


__all__ = [
    "ANSWER",
    "FORMAT",
    "IOU_END",
    "IOU_START",
    "REWARD_NAMES",
    "answer_reward",
    "format_reward",
    "iou_threshold_at",
    "reward_notes",
]
