"""Evaluation: generation with a checkpoint, challenge-format predictions, FLARE25 scoring and reports.

    generate.py     batched greedy generation with the training prompt and pixel limits
    predictions.py  model text -> the task type's challenge answer, in the original raw records
    scoring.py      challenge-format predictions scored against raw ground truth (score_predictions.py)
    report.py       metrics Markdown, comparison tables, the bar chart
    evaluate.py     the pipeline scripts/evaluate_flare.py runs
    callback.py     generation metrics during training
    infer.py        one question about one or a few images (scripts/infer.py)

Typical use (what ``scripts/score_predictions.py`` does)::

    from qwenvl.eval.scoring import load_ground_truth, load_predictions, score_records, metrics_markdown

    metrics = score_records(load_ground_truth("organized_dataset/validation-public"),
                            load_predictions("predictions.json"))
    print(metrics_markdown(metrics))

How each task type's answers are read, written and scored lives in :mod:`qwenvl.flare.tasks`. Importing this
package loads no model and no torch.
"""
