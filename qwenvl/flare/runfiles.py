"""The names of the files a run folder holds, for the trainer that writes them and the tools that read them.

A training run's ``output_dir``::

    run.json               live record: pid, host, start time, total steps, status (rank 0)
    train_log.jsonl        one JSON object per logging step (loss, learning rate per group, throughput...)
    train.log              the same steps as text lines, for ``tail -f``
    dataset_report.json    per dataset: records, samples dropped before training and why
    run_info.json          resolved arguments, dataset mix, seed, versions, git commit (in every checkpoint too)
    checkpoint-N/          a self-contained checkpoint

An evaluation's ``output_dir`` holds the ``EVAL_*`` files below.
"""

from __future__ import annotations

RUN_FILE = "run.json"
TRAIN_LOG_JSONL = "train_log.jsonl"
TRAIN_LOG_TEXT = "train.log"
DATASET_REPORT = "dataset_report.json"
RUN_INFO = "run_info.json"
GENERATION_EVAL_DIR = "generation_eval"

EVAL_PREDICTIONS = "predictions.json"
EVAL_RAW_OUTPUTS = "raw_outputs.jsonl"
EVAL_SUMMARY = "summary.json"
EVAL_METRICS_JSON = "metrics.json"
EVAL_METRICS_MD = "metrics.md"
EVAL_METRICS_PNG = "metrics.png"
EVAL_REPORT_HTML = "report.html"
