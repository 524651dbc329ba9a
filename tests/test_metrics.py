"""FLARE25 metrics against hand-computed values."""

from __future__ import annotations

import pytest

from qwenvl.flare.metrics import (
    accuracy,
    balanced_accuracy,
    bleu4,
    detection_f1,
    instance_detection_f1,
    iou,
    mae,
    match_boxes,
    multilabel_micro_f1,
    parse_green_response,
    prf_from_counts,
    rouge_l,
)
from qwenvl.flare.tasks import task_for
from qwenvl.flare.tasks.multi_label import parse_multilabel

# ----------------------------------------------------------------------------------------------- classification


def test_balanced_accuracy_unequal_classes_and_class_never_predicted():
    gt = ["A", "A", "A", "A", "B", "B", "C"]
    pred = ["A", "A", "A", "B", "B", None, "A"]
    # recall A = 3/4, B = 1/2, C = 0/1 (C is never predicted) -> (0.75 + 0.5 + 0) / 3
    assert balanced_accuracy(gt, pred) == pytest.approx(1.25 / 3)
    assert accuracy(gt, pred) == pytest.approx(4 / 7)


def test_balanced_accuracy_differs_from_accuracy_on_majority_guessing():
    gt = ["A"] * 9 + ["B"]
    pred = ["A"] * 10
    assert accuracy(gt, pred) == pytest.approx(0.9)
    assert balanced_accuracy(gt, pred) == pytest.approx(0.5)


def test_balanced_accuracy_unparsable_is_wrong_and_extra_class_ignored():
    assert balanced_accuracy(["A", "B"], [None, "B"]) == pytest.approx(0.5)
    # "D" is not a ground-truth class: it only costs the recall of A.
    assert balanced_accuracy(["A", "A", "B"], ["D", "A", "B"]) == pytest.approx((0.5 + 1.0) / 2)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="2 items but predictions have 1"):
        balanced_accuracy(["A", "B"], ["A"])
    with pytest.raises(ValueError, match="zero items"):
        mae([], [])


# ----------------------------------------------------------------------------------------------- F1 counts


def test_prf_from_counts():
    assert prf_from_counts(2, 1, 1) == {
        "f1": pytest.approx(2 / 3),
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "tp": 2,
        "fp": 1,
        "fn": 1,
    }
    assert prf_from_counts(0, 0, 3)["f1"] == 0.0
    assert prf_from_counts(0, 0, 3)["precision"] == 0.0
    assert prf_from_counts(0, 0, 0)["f1"] == 1.0


def test_multilabel_micro_f1_multiword_labels():
    gt = [parse_multilabel("Pleural effusion; Nodule"), parse_multilabel("cardiomegaly")]
    pred = [parse_multilabel("pleural effusion"), parse_multilabel("Cardiomegaly, nodule")]
    # TP = pleural effusion, cardiomegaly; FN = nodule (record 1); FP = nodule (record 2)
    out = multilabel_micro_f1(gt, pred)
    assert (out["tp"], out["fp"], out["fn"]) == (2, 1, 1)
    assert out["f1"] == pytest.approx(2 / 3)
    # Splitting on spaces (a known defect) would have produced "pleural" and "effusion": not here.
    assert gt[0] == {"pleural effusion", "nodule"}


def test_multilabel_letters_and_names_are_different_labels_to_the_challenge():
    question = "Which findings? A: Pleural effusion B: Nodule C: Cardiomegaly"
    task = task_for("multi-label classification")
    # The challenge compares the texts: letters never equal their options' names, either way round.
    gt, pred = task.parse_reference("Pleural effusion; Nodule", question), task.read_answer("A, B", question)
    assert (gt, pred) == ({"pleural effusion", "nodule"}, {"a", "b"})
    assert multilabel_micro_f1([gt], [pred])["f1"] == 0.0
    assert multilabel_micro_f1([task.parse_reference("C")], [task.read_answer("cardiomegaly")])["f1"] == 0.0
    # The tolerant reader still knows what a model meant (to write its answer in the dataset's vocabulary).
    options = {"A": "Pleural effusion", "B": "Nodule", "C": "Cardiomegaly"}
    assert parse_multilabel("A, B", options) == parse_multilabel("Pleural effusion; Nodule", options)


def test_multilabel_unparsable_prediction_is_all_fn():
    out = multilabel_micro_f1([{"a", "b"}], [None])
    assert (out["tp"], out["fp"], out["fn"], out["f1"]) == (0, 0, 2, 0.0)


# ----------------------------------------------------------------------------------------------- boxes


def test_iou_hand_values():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [0, 0, 10, 5]) == 0.5  # exactly one half
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0  # touching edges
    assert iou([10, 10, 0, 0], [0, 0, 10, 10]) == 0.0  # inverted box has no area


def test_detection_multibox_with_unmatched_prediction():
    gt = [[[0, 0, 10, 10], [20, 20, 30, 30]]]
    # IoU(g1, p1) = 80/100 = 0.8, IoU(g2, p2) = 1.0, p3 overlaps nothing -> TP 2, FP 1, FN 0
    pred = [[[0, 0, 10, 8], [20, 20, 30, 30], [50, 50, 60, 60]]]
    out = detection_f1(gt, pred)
    assert (out["tp"], out["fp"], out["fn"]) == (2, 1, 0)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == 1.0
    assert out["f1"] == pytest.approx(0.8)


def test_detection_pools_records_and_unparsable_is_all_fn():
    gt = [[[0, 0, 10, 10], [20, 20, 30, 30]], [[0, 0, 10, 10]]]
    pred = [[[0, 0, 10, 8], [20, 20, 30, 30], [50, 50, 60, 60]], None]
    out = detection_f1(gt, pred)
    assert (out["tp"], out["fp"], out["fn"]) == (2, 1, 1)
    assert out["f1"] == pytest.approx(4 / 6)


def test_match_boxes_is_greedy_in_ground_truth_order():
    # One prediction, IoU 0.7 with g1 and 60/70 with g2: g1 comes first and takes it.
    gt = [[0, 0, 10, 10], [0, 0, 10, 6]]
    pred = [[0, 0, 10, 7]]
    assert iou(gt[1], pred[0]) == pytest.approx(60 / 70)
    assert match_boxes(gt, pred) == (1, 0, 1)
    # Each ground-truth box takes its best-IoU unmatched prediction, not the first one listed.
    assert match_boxes([[0, 0, 10, 10]], [[0, 0, 10, 6], [0, 0, 10, 9]]) == (1, 1, 0)


def test_iou_exactly_half_detection_strict_instance_inclusive():
    gt_box, pred_box = [0, 0, 10, 10], [0, 0, 10, 5]
    assert match_boxes([gt_box], [pred_box], 0.5, strict=True) == (0, 1, 1)
    assert match_boxes([gt_box], [pred_box], 0.5, strict=False) == (1, 0, 0)
    assert detection_f1([[gt_box]], [[pred_box]])["f1"] == 0.0
    assert instance_detection_f1([{"1": [gt_box]}], [{"1": [pred_box]}])["f1"] == 1.0


def test_instance_detection_missing_ids_on_either_side():
    a1, a2, b1, c1 = [0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [50, 50, 60, 60]
    gt = [{"1": [a1, a2], "2": [b1]}]
    pred = [{"1": [a1], "3": [c1]}]
    # id 1: TP 1, FN 1; id 2 missing in prediction: FN 1; id 3 not in ground truth: FP 1
    out = instance_detection_f1(gt, pred)
    assert (out["tp"], out["fp"], out["fn"]) == (1, 1, 2)
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(0.4)


def test_instance_detection_box_under_wrong_id_does_not_count():
    box = [0, 0, 10, 10]
    out = instance_detection_f1([{"1": [box]}, {"2": [box]}], [{"2": [box]}, None])
    # record 1: id 1 FN, id 2 FP; record 2: unparsable -> id 2 FN
    assert (out["tp"], out["fp"], out["fn"]) == (0, 1, 2)


# ----------------------------------------------------------------------------------------------- numbers, text


def test_mae():
    assert mae([10, 20, 30], [12, 20, 27]) == pytest.approx(5 / 3)


def test_bleu4_and_rouge_l():
    ref = "the heart is normal in size and shape"
    assert bleu4([ref], [ref]) == pytest.approx(1.0)
    assert bleu4([ref], [None]) == 0.0
    # LCS("the heart is normal", "the heart is enlarged") = 3 tokens: P = R = 3/4
    assert rouge_l(["the heart is normal"], ["the heart is enlarged"]) == pytest.approx(0.75)
    assert rouge_l(["a b", "the heart is normal"], [None, "the heart is normal"]) == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------- GREEN parsing

GREEN_RESPONSE = """[Explanation]:
The candidate misses the effusion and invents a nodule.

[Clinically Significant Errors]:
(a) False report of a finding in the candidate: 1. Nodule.
(b) Missing a finding present in the reference: 1. Effusion.
(c) Misidentification of a finding's anatomic location/position: 0.
(d) Misassessment of the severity of a finding: 0.
(e) Mentioning a comparison that isn't in the reference: 0.
(f) Omitting a comparison detailing a change from a prior study: 0.

[Clinically Insignificant Errors]:
(a) False report of a finding in the candidate: 2. x; y.

[Matched Findings]:
2. Normal heart size; clear lungs.
"""


def test_parse_green_response_formula():
    # matched 2, significant errors 1 + 1 -> 2 / (2 + 2); insignificant errors do not count
    assert parse_green_response(GREEN_RESPONSE) == pytest.approx(0.5)
    no_errors = GREEN_RESPONSE.split("[Clinically Significant Errors]:")[0] + (
        "[Clinically Significant Errors]:\nNo clinically significant errors.\n\n[Matched Findings]:\n3. a; b; c.\n"
    )
    assert parse_green_response(no_errors) == 1.0
    assert parse_green_response(GREEN_RESPONSE.replace("2. Normal heart", "0. Normal heart")) == 0.0
    assert parse_green_response("The reports agree.") is None
