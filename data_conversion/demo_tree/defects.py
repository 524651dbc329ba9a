"""The nine defects ``--with-defects`` seeds into a clean demo tree, and what the converter must report.

Six are damage and sit in training folders: missing and corrupt images, an empty answer, a duplicate, a
truncated question file. Three are the known noise of the real FLARE25 data: an endo classification answered
``T`` (for Tumor) instead of an offered letter, a single-label question answered ``A B``, and a
validation-public image byte-identical to a training image (iugc, whose three questions about that image stay
together). Each record defect maps to one skip reason of :mod:`qwenvl.flare.schema`; the leak is not skipped
but reported (``train_val_leak``), so converter and validator tests can check that exactly these records (and
the one unreadable file) are reported, and nothing else.
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
from qwenvl.flare.leaks import TRAIN_VAL_LEAK
from qwenvl.flare.raw import IMAGE_FOLDERS
from qwenvl.flare.schema import (
    SKIP_CORRUPT_IMAGE,
    SKIP_DUPLICATE,
    SKIP_EMPTY_ANSWER,
    SKIP_MISSING_IMAGE,
    SKIP_NOT_AN_OPTION,
    SKIP_SEVERAL_ANSWERS,
    SKIP_UNREADABLE_FILE,
)

LEAK_DATASET = "iugc"  # its validation image 0 gets the bytes (and answers) of its training image 0


def demo_defects(samples_per_split: int = DEFAULT_SAMPLES_PER_SPLIT) -> list[dict]:
    """The defects ``--with-defects`` seeds, as the converter should report them. Record defects give the
    record's index in its question file; the unreadable file gives its file name (in its dataset folder); the
    leak gives the validation image (in its dataset folder) and the indices of the records that show it."""
    iugc_val = LEAK_DATASET + "_0000.png"
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
        {"dataset": "CMMD", "split_folder": "training", "index": 0, "reason": SKIP_SEVERAL_ANSWERS},
        {"dataset": "endo", "split_folder": "validation-public", "index": 0, "reason": SKIP_NOT_AN_OPTION},
        {
            "dataset": LEAK_DATASET,
            "split_folder": "validation-public",
            "file": f"{IMAGE_FOLDERS['validation-public']}/{iugc_val}",
            "records": list(range(min(3, samples_per_split))),  # the group of three questions on image 0
            "reason": TRAIN_VAL_LEAK,
        },
    ]


DEMO_DEFECTS: list[dict] = demo_defects(DEFAULT_SAMPLES_PER_SPLIT)  # for the default samples_per_split


def apply_defects(root: Path, samples_per_split: int, seed: int) -> list[dict]:
    """Seed the nine defects of :func:`demo_defects` into a clean tree written with ``samples_per_split`` (at
    least 2: bone_marrow record 1 is corrupted) and return them."""
    defects = demo_defects(samples_per_split)

    def train_dir(name: str) -> Path:
        return dataset_dir(root, name, "training")

    def records_in(name: str, split_folder: str) -> tuple[Path, list[dict]]:
        path = dataset_dir(root, name, split_folder) / question_file_name(name, split_folder)
        return path, json.loads(path.read_text(encoding="utf-8"))

    def train_records(name: str) -> tuple[Path, list[dict]]:
        return records_in(name, "training")

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

    path, cmmd = train_records("CMMD")
    cmmd[0]["Answer"] = "A B"
    write_question_file(path, cmmd)

    path, endo_val = records_in("endo", "validation-public")
    endo_val[0]["Answer"] = "T"
    write_question_file(path, endo_val)

    leak = defects[-1]
    _, iugc_train = train_records(LEAK_DATASET)
    path, iugc_val = records_in(LEAK_DATASET, "validation-public")
    (path.parent / leak["file"]).write_bytes(
        (train_dir(LEAK_DATASET) / iugc_train[0]["ImageName"]).read_bytes()
    )
    for k in leak["records"]:  # the same image asks the same questions: it gets the training answers too
        iugc_val[k]["Answer"] = iugc_train[k]["Answer"]
    write_question_file(path, iugc_val)
    return defects
