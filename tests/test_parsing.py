"""Answer parsing on messy, realistic model text."""

from __future__ import annotations

import pytest

from qwenvl.flare.boxes import boxes_to_grid, boxes_to_pixels
from qwenvl.flare.parsing import parse_boxes, parse_instances, parse_number, parse_options
from qwenvl.flare.tasks import parse_answer, task_for
from qwenvl.flare.tasks.classification import parse_classification
from qwenvl.flare.tasks.multi_label import parse_multilabel
from qwenvl.flare.tasks.report_generation import parse_report

BM_QUESTION = (
    "Question: What abnormality does this bone marrow smear show? "
    "Options: A: Normal B: Myelofibrosis C: Acute myeloid leukemia"
)
BM_OPTIONS = {"A": "Normal", "B": "Myelofibrosis", "C": "Acute myeloid leukemia"}


# ----------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        (BM_QUESTION, BM_OPTIONS),
        ("Does the infant have jaundice? A. No, B. Yes", {"A": "No", "B": "Yes"}),
        (
            "Which grade? A) grade 0 B) grade 1 C) grade 2\nAnswer with the option letter.",
            {"A": "grade 0", "B": "grade 1", "C": "grade 2"},
        ),
        (
            "Lesion type: (A) benign (B) malignant (C) normal",
            {"A": "benign", "B": "malignant", "C": "normal"},
        ),
        (
            "Diagnose the fundus image.\nA. Normal\nB. Diabetic retinopathy\nC. Glaucoma",
            {"A": "Normal", "B": "Diabetic retinopathy", "C": "Glaucoma"},
        ),
        # A lone "A." inside the question does not win over the real option list.
        ("Is grade A. present? Options: A: Yes B: No", {"A": "Yes", "B": "No"}),
        ("Is this image normal? A. Yes, or B. No", {"A": "Yes", "B": "No"}),
        ("Describe the image.", {}),
        ("Only one marker A: here", {}),
        (None, {}),
    ],
)
def test_parse_options(question, expected):
    assert parse_options(question) == expected


# ----------------------------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", "B"),
        ("B.", "B"),
        (" b\n", "B"),
        ("(B)", "B"),
        ("**B**", "B"),
        ("The answer is B.", "B"),
        ("Answer: b", "B"),
        ("The correct option is (C)", "C"),
        ("Final answer: B - Myelofibrosis", "B"),
        ("B) Normal", "B"),  # explicit letter beats the text after it
        ("C. Acute myeloid leukemia", "C"),
        ("```\nB\n```", "B"),
        ("B<|im_end|>", "B"),
        ("Myelofibrosis", "B"),
        ("It shows acute myeloid leukemia.", "C"),
        ("B Myelofibrosis", "B"),
        ("Option A: Normal is unlikely; the answer is B", "B"),
        ("I think C is right.", "C"),
        # The article "A" is never taken as a letter: here the text names option A's "Normal".
        ("A normal marrow with no abnormality", "A"),
        ("e.g. the picture is unclear", None),
        ("I cannot determine this from the image.", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_classification(answer, expected):
    assert parse_classification(answer, BM_OPTIONS) == expected


def test_article_a_not_a_letter_when_normal_is_b():
    options = {"A": "Myelofibrosis", "B": "Normal"}
    assert parse_classification("A normal image.", options) == "B"
    assert parse_classification("The answer is a normal image.", options) == "B"
    # Without options only explicit letters count.
    assert parse_classification("A normal image.") is None
    assert parse_classification("The answer is B.") == "B"


def test_ambiguous_option_text_is_unparsable():
    options = {"A": "No", "B": "Yes"}
    assert parse_classification("Yes", options) == "B"
    assert parse_classification("Yes or no, hard to say", options) is None


def test_ground_truth_classification_is_the_challenges_normalised_string():
    task = task_for("classification")
    assert task.parse_reference(" B ", BM_QUESTION) == "b"
    assert task.parse_reference("A B", BM_QUESTION) == "a b"  # known noisy label stays its own class
    assert task.parse_reference("T") == "t"
    assert task.parse_reference("Myelofibrosis", BM_QUESTION) == "myelofibrosis"  # a text stays a text


# ----------------------------------------------------------------------------------------------- multi-label

ML_OPTIONS = {"A": "Pleural effusion", "B": "Nodule", "C": "Cardiomegaly"}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("pleural effusion; nodule", {"pleural effusion", "nodule"}),
        ("Pleural Effusion, Nodule.", {"pleural effusion", "nodule"}),
        ("A, B", {"pleural effusion", "nodule"}),
        ("(A); (C)", {"pleural effusion", "cardiomegaly"}),
        ("A: Pleural effusion, C: Cardiomegaly", {"pleural effusion", "cardiomegaly"}),
        ('["pleural effusion", "nodule"]', {"pleural effusion", "nodule"}),
        ("[pleural effusion, nodule]", {"pleural effusion", "nodule"}),
        ("Answer: nodule", {"nodule"}),
        ("- pleural effusion\n- cardiomegaly", {"pleural effusion", "cardiomegaly"}),
        ("nodule;  pleural   effusion ;", {"nodule", "pleural effusion"}),
        ("lesion (benign); caries", {"lesion (benign)", "caries"}),
        ("A normal finding; b", {"a normal finding", "nodule"}),
        ("", None),
        (" ; , ", None),
    ],
)
def test_parse_multilabel_with_options(answer, expected):
    assert parse_multilabel(answer, ML_OPTIONS) == expected


def test_parse_multilabel_without_options_keeps_words_together():
    assert parse_multilabel("Pleural effusion; Nodule") == {"pleural effusion", "nodule"}
    assert parse_multilabel("(A), B.") == {"a", "b"}
    assert parse_multilabel("A: Pleural effusion") == {"pleural effusion"}
    assert parse_multilabel(["Caries", "periapical lesion"]) == {"caries", "periapical lesion"}


# ----------------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("[[10, 20, 30, 40], [50, 60, 70, 80]]", [[10, 20, 30, 40], [50, 60, 70, 80]]),
        ("[10,20,30,40]", [[10, 20, 30, 40]]),
        ("[[ 10 ,20,\n 30, 40 ]]", [[10, 20, 30, 40]]),
        ("```json\n[\n  [10, 20, 30, 40]\n]\n```", [[10, 20, 30, 40]]),
        ("The lesion is at [[10, 20, 30, 40]] in the left breast.", [[10, 20, 30, 40]]),
        (
            '[{"bbox_2d": [1, 2, 3, 4], "label": "tumor"}, {"bbox_2d": [5, 6, 7, 8], "label": "tumor"}]',
            [[1, 2, 3, 4], [5, 6, 7, 8]],
        ),
        ('```json\n{"bbox_2d": [100, 200, 300, 400], "label": "lesion"}\n```', [[100, 200, 300, 400]]),
        ("[(1.5, 2, 3.25, 4)]", [[1.5, 2, 3.25, 4]]),
        ("[[1, 2, 3, 4], [5, 6,", [[1, 2, 3, 4]]),  # truncated tail: complete boxes kept
        ("10, 20, 30, 40", [[10, 20, 30, 40]]),
        ("[]", []),
        ("No lesion is visible.", None),
        ("[[1, 2, 3]]", None),
        ([[1, 2, 3, 4]], [[1, 2, 3, 4]]),
        ([1, 2, 3, 4], [[1, 2, 3, 4]]),
    ],
)
def test_parse_boxes(answer, expected):
    assert parse_boxes(answer) == expected


# ----------------------------------------------------------------------------------------------- instances


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            '{"1": [[1, 2, 3, 4]], "2": [[5, 6, 7, 8], [9, 10, 11, 12]]}',
            {"1": [[1, 2, 3, 4]], "2": [[5, 6, 7, 8], [9, 10, 11, 12]]},
        ),
        ('```json\n{"1": [[1, 2, 3, 4]]}\n```\nThese are the chromosomes.', {"1": [[1, 2, 3, 4]]}),
        ('Here: {"1": [[1,2,3,4]]} done', {"1": [[1, 2, 3, 4]]}),
        (
            '{"1": [[1, 2, 3, 4]], "2": [[5, 6, 7, 8]], "3": [[9, 10',
            {"1": [[1, 2, 3, 4]], "2": [[5, 6, 7, 8]]},
        ),
        ('{"1": [[1, 2, 3, 4], [5, 6, 7, 8]], "2": [[9, 10, 11, 1', {"1": [[1, 2, 3, 4], [5, 6, 7, 8]]}),
        ("{'1': [1, 2, 3, 4], '2': [5, 6, 7, 8]}", {"1": [[1, 2, 3, 4]], "2": [[5, 6, 7, 8]]}),
        ('{ "X" : [ [1,2,3,4] ] }', {"X": [[1, 2, 3, 4]]}),
        (
            '[{"bbox_2d": [1, 2, 3, 4], "label": "1"}, {"bbox_2d": [5, 6, 7, 8], "label": "2"}]',
            {"1": [[1, 2, 3, 4]], "2": [[5, 6, 7, 8]]},
        ),
        ("{}", {}),
        ('{"1": [[1, 2,', None),
        ("No chromosomes found.", None),
        ({"1": [[1, 2, 3, 4]], 2: [5, 6, 7, 8]}, {"1": [[1, 2, 3, 4]], "2": [[5, 6, 7, 8]]}),
    ],
)
def test_parse_instances(answer, expected):
    assert parse_instances(answer) == expected


# ----------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("250", 250.0),
        (" 250\n", 250.0),
        ("There are 1,234 cells in the image.", 1234.0),
        ("35.5%", 35.5),
        ("The bone resorption is approximately 12.5 %.", 12.5),
        ("Approximately 312 cells.", 312.0),
        ("-3.5", -3.5),
        ("Count: 42<|im_end|>", 42.0),
        ("1e3", 1000.0),
        (".5 mm", 0.5),
        ("H2O level 7", 7.0),
        ("many cells", None),
        ("", None),
        (42, 42.0),
        (3.5, 3.5),
        (float("nan"), None),
        (True, None),
    ],
)
def test_parse_number(answer, expected):
    assert parse_number(answer) == expected


def test_parse_report():
    assert parse_report("  The heart is normal.\n<|im_end|>") == "The heart is normal."
    assert parse_report("   ") is None
    assert parse_report(None) is None


def test_parse_answer_dispatch_uses_raw_task_names_and_options():
    assert parse_answer("Myelofibrosis", "Classification", BM_QUESTION) == "B"
    assert parse_answer("B", "Multi-label Classification", "Options: A: Pleural effusion B: Nodule") == {
        "nodule"
    }
    assert parse_answer("7 cells", "Counting") == 7.0
    assert parse_answer("[1,2,3,4]", "detection") == [[1, 2, 3, 4]]
    assert parse_answer("Lungs are clear.", "Report_Generation") == "Lungs are clear."
    with pytest.raises(ValueError, match="unknown task type"):
        parse_answer("x", "segmentation")


# ----------------------------------------------------------------------------------------------- coordinates


def test_boxes_to_pixels_and_grid_reuse_boxes_module():
    # 200 x 100 image: grid x 500 -> 100 px, grid y 1000 -> 100 px.
    assert boxes_to_pixels([[0, 0, 500, 1000]], 200, 100) == [[0.0, 0.0, 100.0, 100.0]]
    assert boxes_to_grid([[0, 0, 100, 100]], 200, 100) == [[0, 0, 500, 1000]]
    assert boxes_to_pixels({"1": [[100, 100, 200, 200]]}, 1000, 500) == {"1": [[100.0, 50.0, 200.0, 100.0]]}
    assert boxes_to_pixels([], 10, 10) == []
    assert boxes_to_pixels(None, 10, 10) is None
