"""GRPO rewards (qwenvl/flare/rewards.py and TaskType.reward): every task type on hand-computed cases, the
format reward, the IoU schedule, and agreement with the challenge metric on whole groups. Torch-free."""

from __future__ import annotations

import json
import math

import pytest

from qwenvl.flare.metrics import accuracy, detection_f1
from qwenvl.flare.rewards import (
    REWARD_NAMES,
    answer_reward,
    format_reward,
    iou_threshold_at,
    reward_notes,
)
from qwenvl.flare.tasks import (
    CLASSIFICATION,
    COUNTING,
    DETECTION,
    INSTANCE_DETECTION,
    MULTI_LABEL,
    REGRESSION,
    REPORT_GENERATION,
    TASK_TYPES,
    TASKS,
    task_for,
)
from qwenvl.flare.vocabulary import LETTERS, LOWER, TEXTS, AnswerVocabulary

Q_CLS = "Which class? A. normal B. benign C. malignant"
Q_ML = "Which findings? A. Nodule B. Effusion C. Mass"
# Two reference boxes on the grid; one prediction overlaps the first with IoU 0.6 (100x60 inside 100x100),
# the other the second with IoU 0.3 (100x30 inside 100x100); the cross IoUs are 0.
REF_BOXES = "[[0, 0, 100, 100], [200, 200, 300, 300]]"
PRED_BOXES = "[[0, 0, 100, 60], [200, 200, 300, 230]]"

# Per task type: (question, reference, a right answer, an unparsable answer).
CASES = {
    CLASSIFICATION: (Q_CLS, "B", "b", "I am not sure"),
    MULTI_LABEL: (Q_ML, "Nodule, Effusion", "effusion;nodule", ""),
    DETECTION: (None, REF_BOXES, REF_BOXES, "no boxes here"),
    INSTANCE_DETECTION: (None, '{"1": [[0, 0, 100, 100]]}', '{"1": [[0, 0, 100, 100]]}', "none"),
    COUNTING: (None, "7", "7", "many"),
    REGRESSION: (None, "41.5", "41.5 mm", "about half"),
    REPORT_GENERATION: (None, "The heart is normal.", "The heart is normal.", "   "),
}


def test_every_task_type_has_a_case_and_a_one_line_reward_note():
    assert set(CASES) == set(TASK_TYPES)
    notes = reward_notes()
    assert list(notes) == list(TASK_TYPES)
    assert all(note and "\n" not in note for note in notes.values())
    assert "lexical stand-in, not GREEN" in notes[REPORT_GENERATION]
    assert REWARD_NAMES == ("answer", "format")


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_a_right_answer_earns_1_and_an_unparsable_one_0_on_both_rewards(task_type):
    question, reference, right, bad = CASES[task_type]
    assert answer_reward(task_type, right, reference, question) == pytest.approx(1.0)
    assert format_reward(task_type, right, question) == 1.0
    assert answer_reward(task_type, bad, reference, question) == 0.0
    assert format_reward(task_type, bad, question) == 0.0
    assert (
        TASKS[task_type].reward(None, TASKS[task_type].parse_reference(reference, question), question) == 0.0
    )


def test_classification_is_1_or_0_on_the_offered_letter():
    assert answer_reward(CLASSIFICATION, "C", "B", Q_CLS) == 0.0  # a wrong letter
    assert answer_reward(CLASSIFICATION, "b", "B", Q_CLS) == 1.0
    # The option's text or a sentence: the toolkit writes the letter, which the challenge scores 1, but the
    # completion is not written in the dataset's form.
    for text in ("benign", "The answer is (B)."):
        assert answer_reward(CLASSIFICATION, text, "B", Q_CLS) == 1.0
        assert format_reward(CLASSIFICATION, text, Q_CLS) == 0.0
    # "D" is the reference but the question offers A-C only: not an answer to this question.
    assert answer_reward(CLASSIFICATION, "D", "D", Q_CLS) == 0.0
    assert format_reward(CLASSIFICATION, "D", Q_CLS) == 0.0
    assert answer_reward(CLASSIFICATION, "D", "D") == 1.0  # without options nothing rules it out
    assert format_reward(CLASSIFICATION, "D") == 1.0


def test_option_rewards_follow_the_datasets_vocabulary():
    texts = AnswerVocabulary(kind=TEXTS, separator="; ", case=LOWER)
    letters = AnswerVocabulary(kind=LETTERS, separator=", ")
    # A dataset answering in texts: a completion in letters is written as texts, so it scores, but its form
    # is not the dataset's; the reverse for a letter dataset.
    assert answer_reward(MULTI_LABEL, "A, B", "nodule; effusion", Q_ML, vocabulary=texts) == 1.0
    assert format_reward(MULTI_LABEL, "A, B", Q_ML, texts) == 0.0
    assert format_reward(MULTI_LABEL, "Effusion, Nodule", Q_ML, texts) == 1.0
    assert answer_reward(MULTI_LABEL, "Nodule; Effusion", "A, B", Q_ML, vocabulary=letters) == 1.0
    assert format_reward(MULTI_LABEL, "B, A", Q_ML, letters) == 1.0
    # The dataset's vocabulary is what the toolkit writes in: a reference in the other one scores 0, as the
    # challenge would score the written answer.
    assert answer_reward(MULTI_LABEL, "A, B", "Nodule, Effusion", Q_ML, vocabulary=letters) == 0.0
    cls_texts = AnswerVocabulary(kind=TEXTS, case=LOWER)
    assert answer_reward(CLASSIFICATION, "B", "benign", Q_CLS, vocabulary=cls_texts) == 1.0
    assert answer_reward(CLASSIFICATION, "benign", "B", Q_CLS, vocabulary=cls_texts) == 0.0


def test_classification_group_mean_is_the_accuracy():
    completions = ["A", "B", "C", "B", "nothing", "A"]
    references = ["A", "B", "B", "C", "A", "A"]
    task = task_for(CLASSIFICATION)
    rewards = [answer_reward(CLASSIFICATION, c, r, Q_CLS) for c, r in zip(completions, references)]
    preds = [task.parse(c, Q_CLS) for c in completions]
    assert sum(rewards) / len(rewards) == pytest.approx(accuracy(references, preds)) == pytest.approx(3 / 6)


def test_multi_label_is_the_f1_of_the_label_sets():
    assert answer_reward(MULTI_LABEL, "a, b", "b, c") == pytest.approx(0.5)  # TP 1, FP 1, FN 1
    # letters, written as the reference's texts: {effusion, mass} against {nodule, effusion}
    assert answer_reward(MULTI_LABEL, "B, C", "Nodule, Effusion", Q_ML) == pytest.approx(0.5)
    assert answer_reward(MULTI_LABEL, "a", "a, b, c") == pytest.approx(2 / 4)  # TP 1, FN 2
    assert answer_reward(MULTI_LABEL, "d", "a, b") == 0.0


def test_detection_is_the_f1_at_the_iou_threshold():
    # IoU 0.6 and 0.3 against two references: one match at 0.5 (TP 1, FP 1, FN 1), two at 0.25.
    assert answer_reward(DETECTION, PRED_BOXES, REF_BOXES) == pytest.approx(0.5)
    assert answer_reward(DETECTION, PRED_BOXES, REF_BOXES, iou_threshold=0.25) == pytest.approx(1.0)
    # Strict, as the challenge's detection metric: IoU 0.6 does not pass 0.6.
    assert answer_reward(DETECTION, PRED_BOXES, REF_BOXES, iou_threshold=0.6) == 0.0
    assert answer_reward(DETECTION, "[[0, 0, 100, 60]]", REF_BOXES) == pytest.approx(2 / 3)  # FN 1
    assert answer_reward(DETECTION, "[]", "[]") == 1.0  # nothing to find, nothing found
    assert answer_reward(DETECTION, "[]", REF_BOXES) == 0.0
    assert answer_reward(DETECTION, PRED_BOXES, "[]") == 0.0
    assert format_reward(DETECTION, "[]") == 1.0


def test_detection_group_mean_is_the_f1_when_each_record_has_one_box_and_one_prediction():
    refs = ["[[0, 0, 100, 100]]"] * 4
    preds = ["[[0, 0, 100, 60]]", "[[0, 0, 100, 30]]", "[[500, 500, 600, 600]]", "[[0, 0, 100, 100]]"]
    task = task_for(DETECTION)
    rewards = [answer_reward(DETECTION, p, r) for p, r in zip(preds, refs)]
    pooled = detection_f1([task.parse(r) for r in refs], [task.parse(p) for p in preds])["f1"]
    assert sum(rewards) / len(rewards) == pytest.approx(pooled) == pytest.approx(2 / 4)


def test_instance_detection_is_the_f1_per_instance_id():
    ref = '{"1": [[0, 0, 100, 100]], "2": [[200, 200, 300, 300]]}'
    # id 1 at IoU 0.6 (TP), id 2 missing (FN), id 3 made up (FP): F1 = 2 / (2 + 1 + 1).
    pred = '{"1": [[0, 0, 100, 60]], "3": [[200, 200, 300, 300]]}'
    assert answer_reward(INSTANCE_DETECTION, pred, ref) == pytest.approx(0.5)
    # Not strict, as the challenge's instance metric: IoU 0.6 passes 0.6 (detection's would not).
    assert answer_reward(INSTANCE_DETECTION, pred, ref, iou_threshold=0.6) == pytest.approx(0.5)
    assert answer_reward(INSTANCE_DETECTION, pred, ref, iou_threshold=0.7) == 0.0
    # The right box under the wrong id counts nothing.
    assert answer_reward(INSTANCE_DETECTION, '{"2": [[0, 0, 100, 100]]}', '{"1": [[0, 0, 100, 100]]}') == 0.0
    assert answer_reward(INSTANCE_DETECTION, "{}", "{}") == 1.0


def test_counting_and_regression_score_the_error_by_1_over_1_plus_relative_error():
    assert answer_reward(REGRESSION, "12", "10") == pytest.approx(1 / (1 + 2 / 10))  # 0.8333...
    assert answer_reward(REGRESSION, "-12", "-10") == pytest.approx(5 / 6)
    assert answer_reward(REGRESSION, "20", "10") == pytest.approx(0.5)  # an error as large as the reference
    assert answer_reward(COUNTING, "3", "0") == pytest.approx(0.25)  # scale 1 below a reference of 1
    assert answer_reward(COUNTING, "0.5", "0") == pytest.approx(1 / 1.5)
    errors = [0, 1, 2, 5, 50, 5000]
    rewards = [answer_reward(COUNTING, str(10 + e), "10") for e in errors]
    assert rewards[0] == 1.0 and all(a > b > 0 for a, b in zip(rewards, rewards[1:]))
    assert [answer_reward(COUNTING, str(10 - e), "10") for e in errors[:4]] == rewards[:4]  # symmetric
    assert task_for(REGRESSION).reward(math.inf, 10.0) == 0.0


def test_report_generation_is_rouge_l_f1():
    # LCS "the heart is" = 3 of 4 tokens each way: P = R = F = 0.75.
    assert answer_reward(REPORT_GENERATION, "the heart is enlarged", "the heart is normal") == pytest.approx(
        0.75
    )
    assert answer_reward(REPORT_GENERATION, "lungs clear", "the heart is normal") == 0.0
    assert format_reward(REPORT_GENERATION, "lungs clear") == 1.0


def test_an_unparsable_reference_is_a_broken_record_and_says_so():
    with pytest.raises(ValueError, match="reference answer 'many' does not parse as a counting answer"):
        answer_reward(COUNTING, "3", "many")
    with pytest.raises(ValueError, match="unknown task type"):
        answer_reward("segmentation", "3", "3")


def test_the_iou_schedule_runs_linearly_from_loose_to_strict():
    assert iou_threshold_at(0.0) == pytest.approx(0.1)
    assert iou_threshold_at(0.5) == pytest.approx(0.3)
    assert iou_threshold_at(1.0) == pytest.approx(0.5)
    assert iou_threshold_at(-0.2) == pytest.approx(0.1) and iou_threshold_at(1.7) == pytest.approx(0.5)
    assert iou_threshold_at(0.25, start=0.2, end=0.6) == pytest.approx(0.3)
    assert iou_threshold_at(0.9, start=0.5, end=0.5) == 0.5  # a fixed threshold
    with pytest.raises(ValueError, match="NaN"):
        iou_threshold_at(math.nan)
    # Early on, the IoU-0.3 box of PRED_BOXES counts; at the end only the IoU-0.6 one does.
    assert answer_reward(DETECTION, PRED_BOXES, REF_BOXES, iou_threshold=iou_threshold_at(0.0)) == 1.0
    assert answer_reward(DETECTION, PRED_BOXES, REF_BOXES, iou_threshold=iou_threshold_at(1.0)) == 0.5


def test_every_labelled_demo_record_earns_full_rewards_for_its_own_answer(demo_converted):
    """The converted targets are what GRPO compares completions with: each must parse as its own task's
    reference and as a completion, under the prompt the model sees and under the raw question."""
    seen, short = set(), []
    for path in sorted(demo_converted.glob("*_train.json")):
        for record in json.loads(path.read_text(encoding="utf-8")):
            task_type, answer = record["meta"]["task_type"], record["conversations"][1]["value"]
            for question in (record["conversations"][0]["value"], record["meta"]["question"]):
                rewards = (
                    answer_reward(task_type, answer, answer, question),
                    format_reward(task_type, answer, question),
                )
                if rewards != (1.0, 1.0):
                    short.append((path.name, task_type, answer[:60], rewards))
            seen.add(task_type)
    assert short == []
    assert seen == set(TASK_TYPES)
