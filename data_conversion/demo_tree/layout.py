"""Where the demo tree puts things: its defaults, folder and question-file names, and the question-file writer.

The layout is the real one (``docs/data_format.md``): ``<root>/<split folder>/<Modality>/<dataset>/`` holding
one question file and one image folder, including the organisers' two naming quirks, the
``IU_XRay_all_train.json`` training file and chestdr's extra ``chestdr_questions_val_withGT.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from qwenvl.flare.datasets import FLARE_DATASETS
from qwenvl.flare.raw import QUESTION_FILE_SUFFIX

DEFAULT_SEED = 0
DEFAULT_SAMPLES_PER_SPLIT = 4
MARKER_FILE = ".flare25_demo"  # JSON summary at the root (no .json suffix, so no *.json glob sees it)
UNLABELLED_FOLDERS = ("validation-hidden", "testing")  # Answer is "" in their question files
WITH_GT_DATASET = "chestdr"  # the one dataset whose validation-hidden folder holds a _withGT copy
REPORT_VARIANT_DATASET = "IU_XRay"  # its training file is named <dataset>_all_train.json


def question_file_name(dataset: str, split_folder: str) -> str:
    """The question file's name in a split folder (``IU_XRay_all_train.json`` for the IU_XRay training file)."""
    suffix = QUESTION_FILE_SUFFIX[split_folder]
    if dataset == REPORT_VARIANT_DATASET and split_folder == "training":
        return f"{dataset}_all_{suffix}.json"
    return f"{dataset}_questions_{suffix}.json"


def dataset_dir(root: Path, dataset: str, split_folder: str) -> Path:
    """``<root>/<split folder>/<Modality>/<dataset>``, the modality folder taken from the dataset table."""
    return root / split_folder / FLARE_DATASETS[dataset].modality / dataset


def write_question_file(path: Path, records: list[dict]) -> None:
    """Write a question file as the organisers do: a JSON list, indented by 2, non-ASCII kept, final newline."""
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
