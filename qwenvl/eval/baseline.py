"""The constant-answer baseline: a :data:`~qwenvl.eval.generate.Generator` that gives every record of a
dataset the same answer, the one its task type says scores best on that dataset's converted training answers
(:meth:`qwenvl.flare.tasks.TaskType.constant_answer`: the most frequent option letter, the median number, the
most common box list). Evaluated like a model (``scripts/evaluate_flare.py --baseline constant``), it is the
level a trained model must beat to show that it reads the images rather than the answer distribution."""

from __future__ import annotations

from collections.abc import Sequence

from qwenvl.eval.constrained import record_task, training_answers
from qwenvl.eval.generate import Generation
from qwenvl.flare.tasks import TASKS

BASELINES = ("constant",)


class ConstantAnswerGenerator:
    """Answers each record with the constant answer of its dataset and task type (from the registered
    training split). Raises ``ValueError`` naming every dataset without training answers."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], str] = {}  # (dataset, task type) -> the answer given

    def _answer(self, record: dict) -> str | None:
        task = record_task(record)
        key = ((record.get("meta") or {}).get("dataset") or "?", task or "?")
        if key not in self.answers:
            answers = training_answers(record)
            answer = TASKS[task].constant_answer(answers.targets) if answers and task in TASKS else None
            if answer is None:
                return None
            self.answers[key] = answer
        return self.answers[key]

    def __call__(self, records: Sequence[dict]) -> list[Generation]:
        answers = [self._answer(r) for r in records]
        missing = sorted(
            {
                f"{(r.get('meta') or {}).get('dataset')} ({record_task(r)})"
                for r, a in zip(records, answers)
                if a is None
            }
        )
        if missing:
            raise ValueError(
                f"no constant answer for {', '.join(missing)}: the baseline learns it from the dataset's "
                "converted training split, and none with answers of that task type is registered. Convert it "
                "with data_conversion/convert_flare_to_qwen3vl.py --splits train"
            )
        return [Generation(text=a) for a in answers]
