"""One raw FLARE25 record -> one converted record (format: ``qwenvl/flare/schema.py``) or a :class:`Skip`.

:func:`convert_record` is the whole rule set for a single record; it checks, in this order: structure
(``invalid_record``), task type (``unknown_task_type``), empty answer in a labelled split (``empty_answer``),
images (``missing_image`` / ``corrupt_image``), answer parsing in a labelled split (``unparsable_answer``, the
task's own rules in :mod:`qwenvl.flare.tasks`), known noise in a labelled split (``answer_not_an_option``,
``several_answers_single_label``: ``TaskType.raw_answer_problem``; with ``keep_noisy`` the record is converted
and the noise listed in :class:`FileState`) and repeats in a labelled split (``duplicate``). It never raises
for a bad record: the reason and a detail naming what is wrong come back in the :class:`Skip`.

The human turn shows the task's prompt of the question (``TaskType.prompt``: box questions on the 0-1000 grid
state that convention), ``meta.prompt_rule`` names the rule applied, and ``meta.question`` keeps the original.

Which question files feed which output split is the converter's business (:mod:`data_conversion.converter`);
a :class:`Source` carries that decision to the record level.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwenvl.flare.answers import AnswerError, clip_text
from qwenvl.flare.images import MISSING, ImageInfo, inspect_image
from qwenvl.flare.leaks import ImageDigests
from qwenvl.flare.raw import REQUIRED_RAW_FIELDS, is_empty_answer
from qwenvl.flare.schema import (
    IMAGE_TAG,
    SKIP_CORRUPT_IMAGE,
    SKIP_DUPLICATE,
    SKIP_EMPTY_ANSWER,
    SKIP_INVALID_RECORD,
    SKIP_MISSING_IMAGE,
    SKIP_UNKNOWN_TASK,
    SKIP_UNPARSABLE_ANSWER,
)
from qwenvl.flare.tasks import normalize_task_type, task_for


@dataclass(frozen=True)
class Skip:
    """One raw record that was not converted (an entry of the report's ``skipped`` list), or a noisy record
    converted under ``keep_noisy`` (an entry of its ``kept_noisy`` list)."""

    dataset: str
    split: str
    source_file: str
    source_index: int
    image_name: Any
    reason: str
    detail: str


@dataclass(frozen=True)
class Source:
    """One question file feeding an output split."""

    dataset: str
    split: str  # output split: train | val | val_hidden | test
    split_folder: str  # raw folder: training | validation-public | validation-hidden | testing
    modality: str  # modality folder the dataset was found in
    dataset_dir: Path
    path: Path
    labelled: bool


@dataclass
class FileState:
    """Per question file: the (ImageName, Question) pairs already converted (labelled files only) and the
    noisy records converted because of ``keep_noisy``."""

    seen: dict[tuple, tuple[int, str]] = field(default_factory=dict)
    kept_noisy: list[Skip] = field(default_factory=list)


class ImageCache:
    """Each distinct image path is opened and decoded once per run (iugc asks 3 questions per image), and
    hashed at most once (``digests``, for the train/val leak check)."""

    def __init__(self) -> None:
        self._infos: dict[str, ImageInfo] = {}
        self.digests = ImageDigests()

    def get(self, path: str) -> ImageInfo:
        info = self._infos.get(path)
        if info is None:
            info = self._infos[path] = inspect_image(path)
        return info

    def __len__(self) -> int:
        return len(self._infos)


def _image_names(raw: dict) -> list[str] | None:
    names = raw.get("ImageName")
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        return None
    if not all(isinstance(n, str) and n.strip() for n in names):
        return None
    return names


def _record_problem(raw: Any, labelled: bool) -> str | None:
    """Why a raw record is structurally invalid (``invalid_record``), or ``None``."""
    if not isinstance(raw, dict):
        return (
            f"record is a JSON {type(raw).__name__}, expected an object with {', '.join(REQUIRED_RAW_FIELDS)}"
        )
    required = REQUIRED_RAW_FIELDS if labelled else tuple(f for f in REQUIRED_RAW_FIELDS if f != "Answer")
    missing = [f for f in required if f not in raw]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if _image_names(raw) is None:
        return f"ImageName must be a non-empty string or list of strings, got {clip_text(json.dumps(raw['ImageName']))}"
    question = raw["Question"]
    if not isinstance(question, str) or not question.strip():
        return f"Question must be a non-empty string, got {clip_text(json.dumps(question))}"
    if IMAGE_TAG in question:
        return f"Question contains the literal {IMAGE_TAG} tag, which would break the image/tag count"
    return None


def _image_paths(source: Source, names: Sequence[str]) -> list[str]:
    return [os.path.normpath(source.dataset_dir / n.strip().replace("\\", "/")) for n in names]


def _image_problem(infos: Sequence[ImageInfo]) -> tuple[str, str] | None:
    bad = [i for i in infos if not i.ok]
    if not bad:
        return None
    reason = SKIP_MISSING_IMAGE if any(i.problem == MISSING for i in bad) else SKIP_CORRUPT_IMAGE
    detail = "; ".join(f"image {k + 1}/{len(infos)}: {i.detail}" for k, i in enumerate(infos) if not i.ok)
    return reason, detail


def _dedup_key(raw: dict) -> tuple:
    """What makes a labelled record a repeat: its ImageName(s) and Question exactly as written."""
    names = raw["ImageName"]
    return (tuple(names) if isinstance(names, list) else (names,), raw["Question"])


def build_record(
    source: Source,
    index: int,
    raw: dict,
    task_type: str,
    infos: Sequence[ImageInfo],
    answer: str,
    box_format: str,
) -> dict:
    """A converted record exactly as ``qwenvl/flare/schema.py`` describes it."""
    paths = [i.path for i in infos]
    meta: dict[str, Any] = {
        "dataset": source.dataset,
        "task_type": task_type,
        "modality": source.modality,
        "split": source.split,
        "source_split_folder": source.split_folder,
        "source_file": str(source.path),
        "source_index": index,
        "image_name": raw["ImageName"],
        "question": raw["Question"],
        "image_sizes": [list(i.size) for i in infos if i.size is not None],
        "has_answer": source.labelled,
    }
    task = task_for(task_type)
    if task.has_boxes:
        meta["box_format"] = box_format
    meta["prompt_rule"] = task.prompt_rule(raw["Question"], box_format)
    return {
        "image": paths[0] if len(paths) == 1 else paths,
        "conversations": [
            {
                "from": "human",
                "value": f"{IMAGE_TAG}\n" * len(paths) + task.prompt(raw["Question"], box_format),
            },
            {"from": "gpt", "value": answer},
        ],
        "meta": meta,
    }


def convert_record(
    source: Source,
    index: int,
    raw: Any,
    cache: ImageCache,
    state: FileState,
    box_format: str,
    keep_noisy: bool = False,
) -> dict | Skip:
    """Convert one raw record, or say why not. Check order: structure, task type, empty answer (labelled),
    images, answer parsing (labelled), known noise (labelled; converted and listed in ``state.kept_noisy``
    when ``keep_noisy``), duplicate (labelled; only converted records count as seen)."""

    def skip(reason: str, detail: str) -> Skip:
        name = raw.get("ImageName") if isinstance(raw, dict) else None
        return Skip(source.dataset, source.split, str(source.path), index, name, reason, detail)

    problem = _record_problem(raw, source.labelled)
    if problem:
        return skip(SKIP_INVALID_RECORD, problem)
    task_type = normalize_task_type(raw["TaskType"])
    if task_type is None:
        return skip(
            SKIP_UNKNOWN_TASK, f"TaskType {clip_text(json.dumps(raw['TaskType']))} is not a FLARE25 task type"
        )
    if source.labelled and is_empty_answer(raw["Answer"]):
        return skip(SKIP_EMPTY_ANSWER, "Answer is empty in a labelled split")
    infos = [cache.get(p) for p in _image_paths(source, _image_names(raw) or [])]
    image_problem = _image_problem(infos)
    if image_problem:
        return skip(*image_problem)
    answer = ""
    if source.labelled:
        try:
            answer = task_for(task_type).target(raw["Answer"], infos[0].size or (1, 1), box_format)
        except AnswerError as e:
            return skip(SKIP_UNPARSABLE_ANSWER, f"{task_type} answer: {e}")
        noise = task_for(task_type).raw_answer_problem(raw["Answer"], raw["Question"])
        if noise and not keep_noisy:
            return skip(*noise)
        key = _dedup_key(raw)
        if key in state.seen:
            first, first_answer = state.seen[key]
            differs = "" if first_answer == answer else " (with a different answer)"
            return skip(SKIP_DUPLICATE, f"repeats record {first} (same ImageName and Question){differs}")
        state.seen[key] = (index, answer)
        if noise:
            state.kept_noisy.append(skip(*noise))
    return build_record(source, index, raw, task_type, infos, answer, box_format)
