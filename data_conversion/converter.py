"""Raw FLARE25 tree -> Qwen3-VL JSON files (format: ``qwenvl/flare/schema.py``) and ``conversion_report.json``.

Splits (the CLI's ``--splits``) and where they come from::

    train  <- training/<Modality>/<dataset>/           -> <dataset>_train.json       (labelled)
    val    <- validation-public/<Modality>/<dataset>/  -> <dataset>_val.json         (labelled)
              validation-hidden/...: <dataset>_questions_val_withGT.json, when present, is appended to
              <dataset>_val.json (meta.source_split_folder tells the two apart); otherwise the answer-less
              question file becomes <dataset>_val_hidden.json (inference inputs)
    test   <- testing/<Modality>/<dataset>/            -> <dataset>_test.json        (inference inputs)

Every raw record is either converted or skipped with one of ``schema.SKIP_REASONS``; per dataset and split the
report holds ``raw = converted + skipped``. Known noise of the real data (a classification answer that is no
offered letter, several letters on a single-label question) is skipped unless ``keep_noisy``; validation
records whose images are byte-identical to training images are converted and listed (``train_val_leaks``). A question file that cannot be read is a file-level entry. Nothing
here aborts on a bad record; only an unusable ``input_dir`` raises :class:`ConversionInputError`.

This module is the plan (which question files feed which output split) and the run. Data flows one way:
:mod:`data_conversion.records` converts one record, :mod:`data_conversion.report` turns the results into
report entries, :mod:`data_conversion.summary` renders a report on the console.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from data_conversion.records import FileState, ImageCache, Skip, Source, convert_record
from data_conversion.report import (
    OUTPUT_SPLITS,
    REPORT_NAME,
    TOOL_VERSION,
    SplitResult,
    load_report,
    merge_report,
    report_entry,
)
from qwenvl.flare.datasets import FLARE_DATASETS, DatasetConfig, resolve_dataset_name
from qwenvl.flare.jsonio import write_json_atomic
from qwenvl.flare.leaks import TRAIN_VAL_LEAK, ImageDigests, find_leaks
from qwenvl.flare.raw import (
    IMAGE_FOLDERS,
    MODALITIES,
    QUESTION_FILE_SUFFIX,
    SPLIT_FOLDERS,
    QuestionFileError,
    find_dataset_dir,
    find_question_file,
    find_withgt_file,
    is_empty_answer,
    read_question_file,
)
from qwenvl.flare.schema import BOX_PIXEL, BOX_QWEN1000, SKIP_UNREADABLE_FILE

CLI_SPLITS = ("train", "val", "test")  # what --splits accepts
DEFAULT_SPLITS = ("train", "val")
BOX_FORMATS = (BOX_QWEN1000, BOX_PIXEL)
# Output splits a CLI split (re)writes: converting "val" also refreshes "val_hidden".
OUTPUT_SPLITS_OF = {"train": ("train",), "val": ("val", "val_hidden"), "test": ("test",)}


def _labelled_layout(split: str) -> str:
    """How one labelled split looks on disk, for the error message of an unusable ``input_dir``."""
    folder = SPLIT_FOLDERS[split]
    return (
        f"<root>/{folder}/<Modality>/<dataset>/{IMAGE_FOLDERS[folder]}/... + "
        f"<dataset>_questions_{QUESTION_FILE_SUFFIX[folder]}.json"
    )


EXPECTED_LAYOUT = (
    f"{_labelled_layout('train')}, {_labelled_layout('val')}, optional {SPLIT_FOLDERS['val_hidden']}/ and "
    f"{SPLIT_FOLDERS['test']}/ folders alike (Modality: {', '.join(sorted(MODALITIES))})"
)


class ConversionInputError(Exception):
    """The input tree cannot be converted at all (missing folder, no split folders): the CLI exits 2."""


# ----------------------------------------------------------------------------------------------------------
# One dataset: the plan (which question files feed which output split), then its conversion
# ----------------------------------------------------------------------------------------------------------


@dataclass
class DatasetPlan:
    """The sources of each output split of one dataset, and the problems found while locating them."""

    results: dict[str, SplitResult]
    sources: list[Source]


def _file_error(dataset: str, split: str, path: Path | str, reason: str, detail: str) -> dict:
    return {"dataset": dataset, "split": split, "source_file": str(path), "reason": reason, "detail": detail}


class _Planner:
    """Locates the question files feeding each output split of one dataset."""

    def __init__(self, input_dir: Path, cfg: DatasetConfig) -> None:
        self.input_dir = input_dir
        self.cfg = cfg
        self.results: dict[str, SplitResult] = {}
        self.sources: list[Source] = []

    def result(self, split: str, labelled: bool) -> SplitResult:
        return self.results.setdefault(split, SplitResult(self.cfg.name, split, labelled))

    def locate(self, split_folder: str, report_to: SplitResult) -> tuple[Path | None, str]:
        """(dataset_dir, modality folder) in one raw split folder; an absent folder is noted in ``report_to``."""
        dataset_dir = find_dataset_dir(self.input_dir, split_folder, self.cfg)
        if dataset_dir is None:
            report_to.missing_folders.append(
                str(self.input_dir / split_folder / self.cfg.modality / self.cfg.name)
            )
            return None, self.cfg.modality
        return dataset_dir, dataset_dir.parent.name

    def add(self, split: str, split_folder: str, labelled: bool, dataset_dir: Path, modality: str) -> None:
        res = self.result(split, labelled)
        path, reason, detail = find_question_file(dataset_dir, self.cfg.name, split_folder)
        if path is None:
            res.file_errors.append(_file_error(self.cfg.name, split, dataset_dir, reason, detail))
            return
        self.sources.append(
            Source(self.cfg.name, split, split_folder, modality, dataset_dir, path.resolve(), labelled)
        )

    def plan_plain(self, split: str) -> None:
        """train <- training (labelled); test <- testing (inference inputs)."""
        folder = SPLIT_FOLDERS[split]
        labelled = split == "train"
        dataset_dir, modality = self.locate(folder, self.result(split, labelled))
        if dataset_dir is not None:
            self.add(split, folder, labelled, dataset_dir, modality)

    def plan_val(self) -> None:
        """validation-public -> val; validation-hidden -> val (withGT copy) or val_hidden (answer-less)."""
        val = self.result("val", True)
        public_folder, hidden_folder = SPLIT_FOLDERS["val"], SPLIT_FOLDERS["val_hidden"]
        public_dir, modality = self.locate(public_folder, val)
        if public_dir is not None:
            self.add("val", public_folder, True, public_dir, modality)
        hidden_dir, modality = self.locate(hidden_folder, val)
        if hidden_dir is None:
            return
        withgt = find_withgt_file(hidden_dir, self.cfg.name)
        if withgt is None:
            self.add("val_hidden", hidden_folder, False, hidden_dir, modality)
        else:
            self.sources.append(
                Source(self.cfg.name, "val", hidden_folder, modality, hidden_dir, withgt.resolve(), True)
            )


def plan_dataset(input_dir: Path, cfg: DatasetConfig, cli_splits: Iterable[str]) -> DatasetPlan:
    """Locate the question files feeding each requested split of ``cfg``."""
    planner = _Planner(input_dir, cfg)
    for split in cli_splits:
        if split == "val":
            planner.plan_val()
        else:
            planner.plan_plain(split)
    return DatasetPlan(planner.results, planner.sources)


def convert_dataset(
    input_dir: Path,
    cfg: DatasetConfig,
    cli_splits: Sequence[str],
    cache: ImageCache,
    box_format: str,
    verbose: bool = False,
    progress: bool = True,
    keep_noisy: bool = False,
) -> list[SplitResult]:
    """Convert every requested split of one dataset (one progress bar); nothing is written here."""
    plan = plan_dataset(input_dir, cfg, cli_splits)
    loaded: list[tuple[Source, list]] = []
    for source in plan.sources:
        res = plan.results[source.split]
        res.source_files.append(str(source.path))
        try:
            loaded.append((source, read_question_file(source.path)))
            res.readable_sources += 1
        except QuestionFileError as e:
            res.file_errors.append(
                _file_error(cfg.name, source.split, source.path, SKIP_UNREADABLE_FILE, str(e))
            )
    total = sum(len(records) for _, records in loaded)
    disable = None if progress else True  # None: on when stderr is a terminal
    with tqdm(total=total, desc=f"{cfg.name:>15}", unit="rec", disable=disable, leave=False) as bar:
        for source, records in loaded:
            _convert_file(
                source, records, plan.results[source.split], cache, box_format, verbose, bar, keep_noisy
            )
    for res in plan.results.values():
        for err in res.file_errors:
            if progress or verbose:
                tqdm.write(f"[{cfg.name} {res.split}] {err['reason']}: {err['detail']}")
    return [plan.results[s] for s in OUTPUT_SPLITS if s in plan.results]


def _convert_file(
    source: Source,
    records: list,
    res: SplitResult,
    cache: ImageCache,
    box_format: str,
    verbose: bool,
    bar: tqdm,
    keep_noisy: bool = False,
) -> None:
    state = FileState()
    res.raw += len(records)
    for index, raw in enumerate(records):
        out = convert_record(source, index, raw, cache, state, box_format, keep_noisy)
        if isinstance(out, Skip):
            res.skips.append(out)
            if verbose:
                tqdm.write(
                    f"skip {out.dataset} {out.split} {source.path.name}[{index}] "
                    f"{json.dumps(out.image_name)}: {out.reason} - {out.detail}"
                )
        else:
            res.records.append(out)
            if not source.labelled and not is_empty_answer(raw.get("Answer")):
                res.answers_ignored += 1
        bar.update(1)
    res.kept_noisy += state.kept_noisy
    if verbose:
        for noisy in state.kept_noisy:
            tqdm.write(
                f"kept (--keep_noisy) {noisy.dataset} {noisy.split} {source.path.name}[{noisy.source_index}] "
                f"{json.dumps(noisy.image_name)}: {noisy.reason} - {noisy.detail}"
            )


# ----------------------------------------------------------------------------------------------------------
# Train/val leaks: validation records showing a training image's bytes (grouped by image)
# ----------------------------------------------------------------------------------------------------------


def _training_records(results: Sequence[SplitResult], out_dir: Path, dataset: str) -> tuple[list, str] | None:
    """The dataset's converted training records: this run's, else the ``<dataset>_train.json`` an earlier run
    left in ``out_dir``; ``None`` when there are none to compare with."""
    for res in results:
        if res.split == "train" and res.readable_sources:
            return res.records, "this run's training records"
    path = out_dir / f"{dataset}_train.json"
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (records, str(path)) if isinstance(records, list) else None


def check_leaks(results: Sequence[SplitResult], out_dir: Path, digests: ImageDigests) -> None:
    """Fill ``leaks`` of the dataset's ``val`` result: one entry per validation record with an image
    byte-identical to a training image (every record of a leaked image, so records stay grouped by image)."""
    val = next((r for r in results if r.split == "val"), None)
    if val is None:
        return
    train = _training_records(results, out_dir, val.dataset)
    if train is None:
        return
    train_records, against = train
    val.leaks_checked_against = against
    val.leaks = []
    for leak in find_leaks(train_records, val.records, digests):
        meta = val.records[leak.index]["meta"]
        train_meta = train_records[leak.train_index].get("meta") or {}
        val.leaks.append(
            {
                "dataset": val.dataset,
                "split": val.split,
                "source_file": meta["source_file"],
                "source_index": meta["source_index"],
                "image_name": meta["image_name"],
                "image": leak.image,
                "train_image": leak.train_image,
                "reason": TRAIN_VAL_LEAK,
                "detail": f"image {leak.image} is byte-identical to training image {leak.train_image} "
                f"(training ImageName {json.dumps(train_meta.get('image_name'))})",
            }
        )


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------


def check_input_dir(input_dir: Path) -> None:
    """Raise :class:`ConversionInputError` unless ``input_dir`` holds at least one raw split folder."""
    if not input_dir.is_dir():
        raise ConversionInputError(
            f"input folder {input_dir} does not exist. Point --input_dir (or $FLARE25_ROOT) at the unzipped "
            f"FLARE25 tree; expected layout: {EXPECTED_LAYOUT}"
        )
    folders = sorted(set(SPLIT_FOLDERS.values()))
    if not any((input_dir / f).is_dir() for f in folders):
        raise ConversionInputError(
            f"input folder {input_dir} has none of the split folders {', '.join(folders)}. "
            f"Expected layout: {EXPECTED_LAYOUT}"
        )


def resolve_conversion_datasets(names: Iterable[str]) -> list[str]:
    """Folder names for ``names`` (any case, or registry form), without repeats. Raises ``ValueError``
    listing the valid names for an unknown one."""
    out: list[str] = []
    for name in names:
        try:
            real = resolve_dataset_name(name.strip())
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if real not in out:
            out.append(real)
    return out


def _check_args(splits: Sequence[str], box_format: str) -> list[str]:
    bad = [s for s in splits if s not in CLI_SPLITS]
    if bad:
        raise ValueError(f"unknown split(s) {', '.join(bad)}; choose from {', '.join(CLI_SPLITS)}")
    if box_format not in BOX_FORMATS:
        raise ValueError(f"unknown box format {box_format!r}; choose from {', '.join(BOX_FORMATS)}")
    return [s for s in CLI_SPLITS if s in splits]


def convert(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    datasets: Iterable[str],
    splits: Sequence[str] = DEFAULT_SPLITS,
    box_format: str = BOX_QWEN1000,
    verbose: bool = False,
    progress: bool = True,
    keep_noisy: bool = False,
) -> dict:
    """Convert ``datasets`` x ``splits`` from the raw tree at ``input_dir`` into ``output_dir`` and return the
    updated ``conversion_report.json`` content (also written there). ``keep_noisy`` converts the records with
    known answer noise (listed in the report's ``kept_noisy``) instead of skipping them.

    Raises :class:`ConversionInputError` when ``input_dir`` is unusable and ``ValueError`` for bad arguments;
    problems with individual files and records are reported, never raised.
    """
    in_dir = Path(input_dir).expanduser().resolve()
    out_dir = Path(output_dir).expanduser().resolve()
    names = resolve_conversion_datasets(datasets)
    cli_splits = _check_args(splits, box_format)
    check_input_dir(in_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "input_dir": str(in_dir),
        "output_dir": str(out_dir),
        "box_format": box_format,
        "keep_noisy": keep_noisy,
        "datasets": names,
        "splits": cli_splits,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tool_version": TOOL_VERSION,
    }
    cache = ImageCache()
    results: list[SplitResult] = []
    entries: dict[tuple[str, str], dict] = {}
    for name in names:
        dataset_results = convert_dataset(
            in_dir, FLARE_DATASETS[name], cli_splits, cache, box_format, verbose, progress, keep_noisy
        )
        check_leaks(dataset_results, out_dir, cache.digests)
        for res in dataset_results:
            output_file = out_dir / f"{name}_{res.split}.json" if res.readable_sources else None
            if output_file is not None:
                write_json_atomic(output_file, res.records)
            results.append(res)
            entries[(name, res.split)] = report_entry(res, output_file, settings)
    touched = {(n, s) for n in names for c in cli_splits for s in OUTPUT_SPLITS_OF[c]}
    report_path = out_dir / REPORT_NAME
    report = merge_report(load_report(report_path), results, entries, touched, settings)
    report["last_run"] = {"entries": [list(k) for k in entries], "distinct_images_checked": len(cache)}
    write_json_atomic(report_path, report)
    return report
