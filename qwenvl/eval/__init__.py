"""Evaluation: answer parsing, FLARE25 metrics and scoring of challenge-format predictions.

Typical use (what ``scripts/score_predictions.py`` does)::

    from qwenvl.eval import load_ground_truth, load_predictions, score_records, metrics_markdown

    metrics = score_records(load_ground_truth("organized_dataset/validation-public"),
                            load_predictions("predictions.json"))
    print(metrics_markdown(metrics))

A generator turns model text into challenge answers with ``parse_answer`` (plus ``boxes_to_pixels`` for box
tasks trained on the 0-1000 grid). Importing this package loads no model and no torch.
"""

from qwenvl.eval.scoring import (
    load_ground_truth,
    load_predictions,
    metrics_markdown,
    record_key,
    score_files,
    score_records,
)
from qwenvl.flare.metrics import (
    balanced_accuracy,
    bleu4,
    detection_f1,
    instance_detection_f1,
    iou,
    mae,
    match_boxes,
    multilabel_micro_f1,
    rouge_l,
)
from qwenvl.flare.parsing import (
    boxes_to_grid,
    boxes_to_pixels,
    parse_answer,
    parse_boxes,
    parse_classification,
    parse_instances,
    parse_multilabel,
    parse_number,
    parse_options,
    parse_report,
)

__all__ = [
    "balanced_accuracy",
    "bleu4",
    "boxes_to_grid",
    "boxes_to_pixels",
    "detection_f1",
    "instance_detection_f1",
    "iou",
    "load_ground_truth",
    "load_predictions",
    "mae",
    "match_boxes",
    "metrics_markdown",
    "multilabel_micro_f1",
    "parse_answer",
    "parse_boxes",
    "parse_classification",
    "parse_instances",
    "parse_multilabel",
    "parse_number",
    "parse_options",
    "parse_report",
    "record_key",
    "rouge_l",
    "score_files",
    "score_records",
]
