"""Writing the demo tree: :func:`make_demo_dataset` and the folders, images and question files it writes.

For every dataset and split folder, the dataset's builder (:func:`~data_conversion.demo_tree.builders.builder_for`)
draws ``samples_per_split`` samples with a generator seeded by ``[seed, dataset index, split index]``; their
images go to the split's image folder and their records to the question file, answers blanked in the
unlabelled folders. Defects, if asked for, are seeded afterwards into the clean tree.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from data_conversion.demo_tree.builders import Sample, builder_for
from data_conversion.demo_tree.defects import apply_defects
from data_conversion.demo_tree.image_files import save_image
from data_conversion.demo_tree.layout import (
    DEFAULT_SAMPLES_PER_SPLIT,
    DEFAULT_SEED,
    MARKER_FILE,
    UNLABELLED_FOLDERS,
    WITH_GT_DATASET,
    dataset_dir,
    question_file_name,
    write_question_file,
)
from data_conversion.demo_tree.specs import DEMO_SPECS, DemoSpec
from qwenvl.flare.raw import IMAGE_FOLDERS, QUESTION_FILE_SUFFIX, SPLIT_FOLDERS


def _write_split(root: Path, spec: DemoSpec, split_folder: str, samples: list[Sample]) -> int:
    """Write one dataset's split folder: its images and question file(s). Returns the number of images."""
    ds_dir = dataset_dir(root, spec.name, split_folder)
    image_folder = IMAGE_FOLDERS[split_folder]
    (ds_dir / image_folder).mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    records = []
    for s in samples:
        names = []
        for gen in s.images:
            if gen.file_name not in written:
                save_image(gen, ds_dir / image_folder / gen.file_name)
                written.add(gen.file_name)
            names.append(f"{image_folder}/{gen.file_name}")
        records.append(
            {
                "TaskType": s.task_type,
                "Modality": spec.modality_text,
                "ImageName": names[0] if len(names) == 1 else names,
                "Question": s.question,
                "Answer": s.answer,
                "Split": QUESTION_FILE_SUFFIX[split_folder],
            }
        )
    unlabelled = split_folder in UNLABELLED_FOLDERS
    write_question_file(
        ds_dir / question_file_name(spec.name, split_folder),
        [_blank(r) if unlabelled else r for r in records],
    )
    if split_folder == "validation-hidden" and spec.name == WITH_GT_DATASET:
        write_question_file(ds_dir / f"{spec.name}_questions_val_withGT.json", records)
    return len(written)


def _blank(record: dict) -> dict:
    return {**record, "Answer": ""}


def _prepare_output_dir(root: Path) -> None:
    """Create ``root``; a previous demo tree there (marked by MARKER_FILE) is replaced, anything else refused."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER_FILE).is_file():
            raise FileExistsError(
                f"{root} is not empty and was not written by make_demo_dataset.py; "
                "pass a new or empty --output_dir (nothing was written)"
            )
        for folder in SPLIT_FOLDERS.values():
            shutil.rmtree(root / folder, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)


def make_demo_dataset(
    output_dir: str | Path,
    seed: int = DEFAULT_SEED,
    samples_per_split: int = DEFAULT_SAMPLES_PER_SPLIT,
    with_defects: bool = False,
) -> dict:
    """Write the demo FLARE25 tree under ``output_dir`` and return a summary:
    ``{"output_dir", "seed", "samples_per_split", "records": {dataset: {split_folder: n}}, "question_files",
    "images", "defects"}`` (``images`` counts image files written before defects were applied; ``records``
    counts the records in each standard question file as written, so BUSI-det training has n + 1 with
    defects). The same seed gives byte-identical files."""
    if samples_per_split < 1:
        raise ValueError(f"samples_per_split must be at least 1, got {samples_per_split}")
    if with_defects and samples_per_split < 2:
        raise ValueError(
            f"--with-defects needs samples_per_split >= 2 (bone_marrow record 1 is corrupted), got {samples_per_split}"
        )
    root = Path(output_dir).expanduser().resolve()
    _prepare_output_dir(root)
    records: dict[str, dict[str, int]] = {}
    images = files = 0
    for d, (name, spec) in enumerate(DEMO_SPECS.items()):
        records[name] = {}
        build = builder_for(spec)
        for s, split_folder in enumerate(SPLIT_FOLDERS.values()):
            rng = np.random.default_rng([seed, d, s])
            samples = build(spec, rng, samples_per_split)
            images += _write_split(root, spec, split_folder, samples)
            records[name][split_folder] = len(samples)
            files += 2 if (split_folder == "validation-hidden" and name == WITH_GT_DATASET) else 1
    defects = apply_defects(root, samples_per_split, seed) if with_defects else []
    if with_defects:
        records["BUSI-det"]["training"] += 1
    summary = {
        "seed": seed,
        "samples_per_split": samples_per_split,
        "records": records,
        "question_files": files,
        "images": images,
        "defects": defects,
    }
    (root / MARKER_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return {"output_dir": str(root), **summary}
