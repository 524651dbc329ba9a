"""The task table: every task type answers the whole interface, on hand-computed cases, and nothing outside
the table branches on task-type names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qwenvl.flare.answers import AnswerError
from qwenvl.flare.tasks import TASK_TYPES, TASKS, TaskType, normalize_task_type, task_for

REPO = Path(__file__).resolve().parents[1]
Q = "Which grade? Options: A: none B: mild C: severe"
META_GRID = {"box_format": "qwen1000", "image_sizes": [[200, 100]]}


def test_the_table_holds_the_seven_challenge_task_types_in_order():
    assert ", ".join(TASK_TYPES) == (
        "classification, multi-label classification, detection, instance_detection, counting, regression, "
        "report_generation"
    )
    for name, task in TASKS.items():
        assert isinstance(task, TaskType) and task.name == name
        assert task.main_metric in task.metric_columns
        assert task.max_new_tokens > 0


@pytest.mark.parametrize(
    "raw, name",
    [
        ("Multi-label Classification", "multi-label classification"),
        ("Report_Generation", "report_generation"),
        ("Instance Detection", "instance_detection"),
        (" COUNTING ", "counting"),
        ("segmentation", None),
        (3, None),
    ],
)
def test_raw_task_type_spellings(raw, name):
    assert normalize_task_type(raw) == name


def test_an_unknown_task_type_names_the_valid_ones():
    with pytest.raises(ValueError, match="segmentation.*classification, multi-label classification"):
        task_for("segmentation")


@pytest.mark.parametrize(
    "task, raw, size, box_format, target",
    [
        ("classification", " B ", (1, 1), "qwen1000", "B"),
        ("multi-label classification", "caries; crown", (1, 1), "qwen1000", "caries; crown"),
        ("detection", "[[10, 20, 30, 40]]", (200, 100), "qwen1000", "[[50, 200, 150, 400]]"),
        ("detection", "[[10, 20, 30, 40]]", (200, 100), "pixel", "[[10, 20, 30, 40]]"),
        (
            "instance_detection",
            {"1": [10, 20, 30, 40]},
            (200, 100),
            "qwen1000",
            '{"1": [[50, 200, 150, 400]]}',
        ),
        ("counting", "12.0", (1, 1), "qwen1000", "12"),
        ("regression", "45.50", (1, 1), "qwen1000", "45.5"),
        ("report_generation", " Findings: clear. ", (1, 1), "qwen1000", "Findings: clear."),
    ],
)
def test_training_targets(task, raw, size, box_format, target):
    assert task_for(task).target(raw, size, box_format) == target


@pytest.mark.parametrize(
    "task, raw", [("counting", "2.5"), ("regression", "n/a"), ("detection", "[1, 2, 3]")]
)
def test_a_raw_answer_that_cannot_be_read_raises(task, raw):
    with pytest.raises(AnswerError):
        task_for(task).target(raw, (1, 1), "qwen1000")


@pytest.mark.parametrize(
    "task, text, value, answer",
    [
        ("classification", "The answer is (c).", "C", "C"),
        ("multi-label classification", "A, C", {"none", "severe"}, "none, severe"),  # the default: texts
        ("detection", "[[50, 200, 150, 400]]<|im_end|>", [[50.0, 200.0, 150.0, 400.0]], "[[10, 20, 30, 40]]"),
        ("instance_detection", '{"7": [[0, 0, 500, 1000]]}', {"7": [[0.0, 0.0, 500.0, 1000.0]]}, '{"7": [[0, 0, 100, 100]]}'),
        ("counting", "I count 14 cells", 14.0, 14),
        ("regression", "about 3.25 mm", 3.25, 3.25),
        ("report_generation", "No acute findings.<|im_end|>", "No acute findings.", "No acute findings."),
    ],
)  # fmt: skip
def test_model_answers_are_parsed_and_written_in_challenge_form(task, text, value, answer):
    t = task_for(task)
    parsed = t.parse(text, Q)
    assert parsed == value
    assert t.challenge_answer(parsed, text, META_GRID) == answer


def test_unparsable_answers_are_none():
    assert task_for("classification").parse("I am not sure", Q) is None
    assert task_for("counting").parse("many") is None
    assert task_for("detection").parse("a lesion in the middle") is None
    assert task_for("report_generation").parse("   ") is None


def test_reference_answers_keep_noisy_classification_labels_as_their_own_class():
    assert task_for("classification").parse_reference("A B", Q) == "a b"
    assert task_for("classification").parse("A B", Q) is None  # two letters: no single answer


@pytest.mark.parametrize(
    "task, gts, preds, expected",
    [
        ("classification", ["A", "A", "B"], ["A", "B", "B"], {"balanced_accuracy": 0.75, "accuracy": 2 / 3}),
        ("counting", [10.0, 4.0], [12.0, None], {"mae": 2.0, "mae_penalized": 3.0, "unparsable_share": 0.5}),
        ("detection", [[[0, 0, 10, 10]]], [[[0, 0, 10, 10], [50, 50, 60, 60]]], {"tp": 1, "fp": 1, "fn": 0}),
    ],
)
def test_metrics_on_hand_computed_cases(task, gts, preds, expected):
    got = task_for(task).metrics(gts, preds)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)


def test_box_targets_are_checked_on_the_grid():
    det, inst = task_for("detection"), task_for("instance_detection")
    assert det.target_problem("[[1, 2, 3, 4]]", "qwen1000") is None
    assert "0-1000 grid" in det.target_problem("[[1, 2, 3, 4000]]", "qwen1000")
    assert det.target_problem("[[1.5, 2, 3, 4000]]", "pixel") is None
    assert "not JSON" in det.target_problem("[[1, 2", "qwen1000")
    assert inst.target_problem('{"1": [[1, 2, 3, 4]]}', "qwen1000") is None
    assert "not a list" in det.target_problem('{"1": [[1, 2, 3, 4]]}', "qwen1000")
    assert task_for("classification").target_problem("anything", None) is None


TASK_NAME_BRANCH = re.compile(
    r"(==|!=|\bin)\s*\(?\s*(CLASSIFICATION|MULTI_LABEL|DETECTION|INSTANCE_DETECTION|COUNTING|REGRESSION"
    r"|REPORT_GENERATION|BOX_TASKS|\"(classification|detection|instance_detection|counting|regression"
    r"|report_generation|multi-label classification)\")"
)


def test_nothing_outside_the_task_table_branches_on_task_type_names():
    """Adding a task type is one module in qwenvl/flare/tasks (and a demo builder); a comparison against a
    task-type name anywhere else would be a second place to change."""
    offenders = []
    for path in sorted(
        [*REPO.glob("qwenvl/**/*.py"), *REPO.glob("data_conversion/**/*.py"), *REPO.glob("scripts/*.py")]
    ):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(("qwenvl/flare/tasks/", "data_conversion/demo_tree/")):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if TASK_NAME_BRANCH.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


def test_constant_answer_is_the_best_single_answer_of_the_training_targets():
    """The constant-answer baseline: the most frequent target (a class prior, the most common box list),
    the lower median for numbers (it minimises the MAE and is a training value)."""
    cls = task_for("classification")
    assert cls.constant_answer(["B", "A", "B", "C", "A", "B"]) == "B"
    assert cls.constant_answer(["C", "A", "A", "C"]) == "C"  # a tie: the earliest
    assert cls.constant_answer([]) is None
    assert task_for("detection").constant_answer(["[]", "[[1, 2, 3, 4]]", "[]"]) == "[]"
    reg, cnt = task_for("regression"), task_for("counting")
    assert reg.constant_answer(["40.5", "12", "7.25", "100", "x"]) == "12"  # median of 7.25, 12, 40.5, 100
    assert reg.constant_answer(["3.50", "1", "9"]) == "3.50"  # as the target is written
    assert cnt.constant_answer(["4", "1", "2", "8"]) == "2"  # lower median: a count, not 3.0
    assert cnt.constant_answer(["none"]) is None
    values = [40.5, 12, 7.25, 100]
    mae = {c: sum(abs(v - c) for v in values) for c in (7.25, 12, 26.25, 100)}
    assert mae[12] == mae[26.25] < mae[7.25] < mae[100]  # any value between the middle two minimises the MAE
