"""The raw FLARE25 tree: its folder layout and the one reader of its question files.

    <root>/<split folder>/<Modality>/<dataset>/<dataset>_questions_<suffix>.json   + images/ folders

(``docs/data_format.md`` describes it; ``data_conversion/demo_tree`` writes a miniature one.)
The converter, the scorer and the evaluator read question files through :func:`read_question_file` and find
them through the functions here, so a file that one of them accepts, all of them accept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qwenvl.flare.datasets import DatasetConfig

# The raw split folders and the names they get in converted files (``<dataset>_<split>.json``).
SPLIT_FOLDERS = {
    "train": "training",
    "val": "validation-public",
    "val_hidden": "validation-hidden",
    "test": "testing",
}
IMAGE_FOLDERS = {
    "training": "imagesTr",
    "validation-public": "imagesVal",
    "validation-hidden": "imagesVal",
    "testing": "imagesTs",
}
# Suffix of the question file in each split folder: ``<dataset>_questions_<suffix>.json``.
QUESTION_FILE_SUFFIX = {
    "training": "train",
    "validation-public": "val",
    "validation-hidden": "val",
    "testing": "test",
}
MODALITIES = (
    "Retinography",
    "Ultrasound",
    "Xray",
    "Clinical",
    "Microscopy",
    "Endoscopy",
    "Dermatology",
    "Mammography",
)
# The fields every raw question record has (``Answer`` is empty in hidden-validation and test inputs).
REQUIRED_RAW_FIELDS = ("TaskType", "ImageName", "Question", "Answer")
# Why a question file could not be used (file-level entries of conversion_report.json).
FILE_MISSING_QUESTIONS = "missing_question_file"
FILE_AMBIGUOUS_QUESTIONS = "ambiguous_question_file"


class QuestionFileError(ValueError):
    """A question file that is not a readable JSON list (file-level ``unreadable_file``)."""


def read_question_file(path: str | Path) -> list:
    """The records of a question file, in order. Raises :class:`QuestionFileError` naming the file when it
    is not readable JSON or not a JSON list."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QuestionFileError(f"cannot read {path} as JSON: {e}") from e
    if not isinstance(data, list):
        raise QuestionFileError(f"{path} holds a JSON {type(data).__name__}, expected a list of records")
    return data


def is_empty_answer(answer: Any) -> bool:
    """``None``, or a string that is blank after stripping (hidden-validation and test inputs)."""
    return answer is None or (isinstance(answer, str) and not answer.strip())


def record_key(record: dict) -> tuple[str, str]:
    """The matching key of a raw or prediction record: (JSON text of ``ImageName``, stripped ``Question``)."""
    name = record["ImageName"]
    if isinstance(name, str):
        name = name.strip()
    elif isinstance(name, list):
        name = [n.strip() if isinstance(n, str) else n for n in name]
    return json.dumps(name, ensure_ascii=False), str(record["Question"]).strip()


def find_dataset_dir(input_dir: Path, split_folder: str, cfg: DatasetConfig) -> Path | None:
    """``<input_dir>/<split_folder>/<Modality>/<dataset>``; if absent there, the dataset folder under any one
    other modality folder (the table's modality is a convention, the tree is the truth)."""
    split_dir = input_dir / split_folder
    expected = split_dir / cfg.modality / cfg.name
    if expected.is_dir():
        return expected
    found = [p for p in split_dir.glob(f"*/{cfg.name}") if p.is_dir()] if split_dir.is_dir() else []
    return found[0] if len(found) == 1 else None


def _is_withgt(path: Path) -> bool:
    return path.stem.lower().endswith("_withgt")


def find_question_file(dataset_dir: Path, dataset: str, split_folder: str) -> tuple[Path | None, str, str]:
    """The question file of a dataset folder: ``<dataset>_questions_<suffix>.json``, else the one other
    ``*.json`` (``_withGT`` copies excluded). Returns ``(path, "", "")`` or ``(None, error_reason, detail)``."""
    preferred = dataset_dir / f"{dataset}_questions_{QUESTION_FILE_SUFFIX[split_folder]}.json"
    if preferred.is_file():
        return preferred, "", ""
    candidates = sorted(p for p in dataset_dir.glob("*.json") if p.is_file() and not _is_withgt(p))
    if len(candidates) == 1:
        return candidates[0], "", ""
    if not candidates:
        return None, FILE_MISSING_QUESTIONS, f"no question file in {dataset_dir} (expected {preferred.name})"
    names = ", ".join(p.name for p in candidates)
    return (
        None,
        FILE_AMBIGUOUS_QUESTIONS,
        f"several question files in {dataset_dir} ({names}) and none named {preferred.name}: "
        "rename the one to convert or move the others away",
    )


def find_withgt_file(dataset_dir: Path, dataset: str) -> Path | None:
    """``<dataset>_questions_val_withGT.json`` in a validation-hidden dataset folder, else a single other
    ``*_withGT.json`` there, else ``None``."""
    exact = dataset_dir / f"{dataset}_questions_val_withGT.json"
    if exact.is_file():
        return exact
    others = [p for p in dataset_dir.glob("*.json") if p.is_file() and _is_withgt(p)]
    return others[0] if len(others) == 1 else None
