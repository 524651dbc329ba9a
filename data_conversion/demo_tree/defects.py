"""The six defects ``--with-defects`` seeds into a clean demo tree, and what the converter must report.

Every defect sits in a training folder and maps to one skip reason of :mod:`qwenvl.flare.schema`, so
converter tests can check that exactly these records (and the one unreadable file) are skipped and reported,
and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_conversion.demo_tree.layout import (
    DEFAULT_SAMPLES_PER_SPLIT,
    dataset_dir,
    question_file_name,
    write_question_file,
)
from qwenvl.flare.schema import (
    SKIP_CORRUPT_IMAGE,
    SKIP_DUPLICATE,
    SKIP_EMPTY_ANSWER,
    SKIP_MISSING_IMAGE,
    SKIP_UNREADABLE_FILE,
)


def demo_defects(samples_per_split: int = DEFAULT_SAMPLES_PER_SPLIT) -> list[dict]:
    """The defects ``--with-defects`` seeds, as the converter should report them. Record defects give the
    record's index in its question file; the unreadable file gives its file name (in its dataset folder)."""
    return [
        {"dataset": "retino", "split_folder": "training", "index": 0, "reason": SKIP_MISSING_IMAGE},
        {"dataset": "bone_marrow", "split_folder": "training", "index": 1, "reason": SKIP_CORRUPT_IMAGE},
        {"dataset": "neojaundice", "split_folder": "training", "index": 0, "reason": SKIP_MISSING_IMAGE},
        {"dataset": "boneresorption", "split_folder": "training", "index": 0, "reason": SKIP_EMPTY_ANSWER},
        {
            "dataset": "BUSI-det",
            "split_folder": "training",
            "index": samples_per_split,
            "reason": SKIP_DUPLICATE,
        },
        {
            "dataset": "endo",
            "split_folder": "training",
            "file": "endo_questions_train.json",
            "reason": SKIP_UNREADABLE_FILE,
        },
    ]


DEMO_DEFECTS: list[dict] = demo_defects(DEFAULT_SAMPLES_PER_SPLIT)  # for the default samples_per_split


def apply_defects(root: Path, samples_per_split: int, seed: int) -> list[dict]:
    """Seed the six defects of :func:`demo_defects` into the training folders of a clean tree written with
    ``samples_per_split`` (at least 2: bone_marrow record 1 is corrupted) and return them."""
    defects = demo_defects(samples_per_split)

    def train_dir(name: str) -> Path:
        return dataset_dir(root, name, "training")

    def train_records(name: str) -> tuple[Path, list[dict]]:
        path = train_dir(name) / question_file_name(name, "training")
        return path, json.loads(path.read_text(encoding="utf-8"))

    _, retino = train_records("retino")
    (train_dir("retino") / retino[0]["ImageName"]).unlink()

    _, marrow = train_records("bone_marrow")
    (train_dir("bone_marrow") / marrow[1]["ImageName"]).write_bytes(
        np.random.default_rng([seed, 7]).bytes(200)
    )

    _, neo = train_records("neojaundice")
    (train_dir("neojaundice") / neo[0]["ImageName"][1]).unlink()

    path, bone = train_records("boneresorption")
    bone[0]["Answer"] = ""
    write_question_file(path, bone)

    path, busi = train_records("BUSI-det")
    write_question_file(path, busi + [dict(busi[0])])

    path = train_dir("endo") / question_file_name("endo", "training")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.4)])
    return defects
