"""Raw FLARE25 tree -> Qwen3-VL JSON files (format: ``data_conversion/schema.py``) and ``conversion_report.json``.

Splits (the CLI's ``--splits``) and where they come from::

    train  <- training/<Modality>/<dataset>/           -> <dataset>_train.json       (labelled)
    val    <- validation-public/<Modality>/<dataset>/  -> <dataset>_val.json         (labelled)
              validation-hidden/...: <dataset>_questions_val_withGT.json, when present, is appended to
              <dataset>_val.json (meta.source_split_folder tells the two apart); otherwise the answer-less
              question file becomes <dataset>_val_hidden.json (inference inputs)
    test   <- testing/<Modality>/<dataset>/            -> <dataset>_test.json        (inference inputs)

Every raw record is either converted or skipped with one of ``schema.SKIP_REASONS``; per dataset and split the
report holds ``raw = converted + skipped``. A question file that cannot be read is a file-level entry. Nothing
here aborts on a bad record; only an unusable ``input_dir`` raises :class:`ConversionInputError`.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from tqdm import tqdm

from qwenvl.flare.answers import AnswerError, clip_text, is_empty_answer
from qwenvl.flare.datasets import FLARE_DATASETS, DatasetConfig, resolve_dataset_name
from qwenvl.flare.images import MISSING, ImageInfo, inspect_image
from qwenvl.flare.jsonio import write_json_atomic
from qwenvl.flare.raw import (
    SPLIT_FOLDERS,
    QuestionFileError,
    find_dataset_dir,
    find_question_file,
    find_withgt_file,
    read_question_file,
)
from qwenvl.flare.schema import (
    BOX_PIXEL,
    BOX_QWEN1000,
    IMAGE_TAG,
    REQUIRED_RAW_FIELDS,
    SKIP_CORRUPT_IMAGE,
    SKIP_DUPLICATE,
    SKIP_EMPTY_ANSWER,
    SKIP_INVALID_RECORD,
    SKIP_MISSING_IMAGE,
    SKIP_REASONS,
    SKIP_UNKNOWN_TASK,
    SKIP_UNPARSABLE_ANSWER,
    SKIP_UNREADABLE_FILE,
)
from qwenvl.flare.tasks import normalize_task_type, task_for

TOOL_NAME = "convert_flare_to_qwen3vl"
TOOL_VERSION = "1.0.0"
REPORT_NAME = "conversion_report.json"

CLI_SPLITS = ("train", "val", "test")  # what --splits accepts
DEFAULT_SPLITS = ("train", "val")
OUTPUT_SPLITS = ("train", "val", "val_hidden", "test")  # the <dataset>_<split>.json files
BOX_FORMATS = (BOX_QWEN1000, BOX_PIXEL)
# Output splits a CLI split (re)writes: converting "val" also refreshes "val_hidden".
OUTPUT_SPLITS_OF = {"train": ("train",), "val": ("val", "val_hidden"), "test": ("test",)}

# File-level problems (the report's "file_errors"; records of such a file are not counted as raw).

EXPECTED_LAYOUT = (
    "<root>/training/<Modality>/<dataset>/imagesTr/... + <dataset>_questions_train.json, "
    "<root>/validation-public/<Modality>/<dataset>/imagesVal/... + <dataset>_questions_val.json, "
    "optional validation-hidden/ and testing/ folders alike (Modality: "
    + ", ".join(sorted({c.modality for c in FLARE_DATASETS.values()}))
    + ")"
)


class ConversionInputError(Exception):
    """The input tree cannot be converted at all (missing folder, no split folders): the CLI exits 2."""


# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------


class ImageCache:
    """Each distinct image path is opened and decoded once per run (iugc asks 3 questions per image)."""

    def __init__(self) -> None:
        self._infos: dict[str, ImageInfo] = {}

    def get(self, path: str) -> ImageInfo:
        info = self._infos.get(path)
        if info is None:
            info = self._infos[path] = inspect_image(path)
        return info

    def __len__(self) -> int:
        return len(self._infos)


# ----------------------------------------------------------------------------------------------------------
# Answers
# ----------------------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    """One raw record that was not converted (an entry of the report's ``skipped`` list)."""

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
    """A converted record exactly as ``schema.py`` describes it."""
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
    if task_for(task_type).has_boxes:
        meta["box_format"] = box_format
    return {
        "image": paths[0] if len(paths) == 1 else paths,
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TAG}\n" * len(paths) + raw["Question"]},
            {"from": "gpt", "value": answer},
        ],
        "meta": meta,
    }


@dataclass
class FileState:
    """Per question file: the (ImageName, Question) pairs already converted (labelled files only)."""

    seen: dict[tuple, tuple[int, str]] = field(default_factory=dict)


def convert_record(
    source: Source, index: int, raw: Any, cache: ImageCache, state: FileState, box_format: str
) -> dict | Skip:
    """Convert one raw record, or say why not. Check order: structure, task type, empty answer (labelled),
    images, answer parsing (labelled), duplicate (labelled; only converted records count as seen)."""

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
        key = _dedup_key(raw)
        if key in state.seen:
            first, first_answer = state.seen[key]
            differs = "" if first_answer == answer else " (with a different answer)"
            return skip(SKIP_DUPLICATE, f"repeats record {first} (same ImageName and Question){differs}")
        state.seen[key] = (index, answer)
    return build_record(source, index, raw, task_type, infos, answer, box_format)


# ----------------------------------------------------------------------------------------------------------
# Finding the files
# ----------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------
# One dataset
# ----------------------------------------------------------------------------------------------------------


@dataclass
class SplitResult:
    """What converting one (dataset, output split) produced."""

    dataset: str
    split: str
    labelled: bool
    records: list[dict] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    raw: int = 0
    source_files: list[str] = field(default_factory=list)
    file_errors: list[dict] = field(default_factory=list)
    missing_folders: list[str] = field(default_factory=list)
    answers_ignored: int = 0
    readable_sources: int = 0


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
            _convert_file(source, records, plan.results[source.split], cache, box_format, verbose, bar)
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
) -> None:
    state = FileState()
    res.raw += len(records)
    for index, raw in enumerate(records):
        out = convert_record(source, index, raw, cache, state, box_format)
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


# ----------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------


def _entry(res: SplitResult, output_file: Path | None, settings: dict) -> dict:
    by_reason = Counter(s.reason for s in res.skips)
    tasks = Counter(r["meta"]["task_type"] for r in res.records)
    entry = {
        "raw": res.raw,
        "converted": len(res.records),
        "skipped": len(res.skips),
        "skipped_by_reason": {r: by_reason[r] for r in SKIP_REASONS if by_reason[r]},
        "labelled": res.labelled,
        "source_files": res.source_files,
        "output_file": str(output_file) if output_file else None,
        "task_types": dict(sorted(tasks.items())),
        "multi_image_records": sum(isinstance(r["image"], list) for r in res.records),
        "file_errors": res.file_errors,
        "missing_folders": res.missing_folders,
        "box_format": settings["box_format"],
        "input_dir": settings["input_dir"],
        "converted_at": settings["time"],
    }
    if not res.labelled:
        entry["answers_ignored"] = res.answers_ignored
    return entry


def load_report(path: Path) -> dict:
    """The existing report, or an empty one when absent or unreadable."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) and isinstance(report.get("datasets"), dict) else {}


def merge_report(
    old: dict, results: Sequence[SplitResult], entries: dict, touched: set, settings: dict
) -> dict:
    """A report whose entries for the ``touched`` (dataset, split) pairs come from this run; every other
    entry of ``old`` is kept as it was."""

    def keep(item: dict) -> bool:
        return (item.get("dataset"), item.get("split")) not in touched

    datasets: dict[str, dict] = {}
    for name, splits in old.get("datasets", {}).items():
        kept = {s: e for s, e in splits.items() if (name, s) not in touched}
        if kept:
            datasets[name] = kept
    for (name, split), entry in entries.items():
        datasets.setdefault(name, {})[split] = entry
    order = list(FLARE_DATASETS)
    datasets = {
        n: {s: datasets[n][s] for s in sorted(datasets[n], key=_split_rank)}
        for n in sorted(datasets, key=lambda n: order.index(n) if n in order else len(order))
    }
    skipped = [s for s in old.get("skipped", []) if keep(s)]
    skipped += [asdict(s) for res in results for s in res.skips]
    file_errors = [e for e in old.get("file_errors", []) if keep(e)]
    file_errors += [e for res in results for e in res.file_errors]
    return {
        "tool": TOOL_NAME,
        "tool_version": TOOL_VERSION,
        "settings": settings,
        "totals": _totals(datasets),
        "datasets": datasets,
        "skipped": skipped,
        "file_errors": file_errors,
    }


def _split_rank(split: str) -> int:
    return OUTPUT_SPLITS.index(split) if split in OUTPUT_SPLITS else len(OUTPUT_SPLITS)


def _totals(datasets: dict) -> dict:
    totals: Counter = Counter()
    reasons: Counter = Counter()
    for splits in datasets.values():
        for entry in splits.values():
            for key in ("raw", "converted", "skipped"):
                totals[key] += entry.get(key, 0)
            reasons.update(entry.get("skipped_by_reason", {}))
    return {
        "raw": totals["raw"],
        "converted": totals["converted"],
        "skipped": totals["skipped"],
        "skipped_by_reason": {r: reasons[r] for r in SKIP_REASONS if reasons[r]},
    }


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


def resolve_datasets(names: Iterable[str]) -> list[str]:
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
) -> dict:
    """Convert ``datasets`` x ``splits`` from the raw tree at ``input_dir`` into ``output_dir`` and return the
    updated ``conversion_report.json`` content (also written there).

    Raises :class:`ConversionInputError` when ``input_dir`` is unusable and ``ValueError`` for bad arguments;
    problems with individual files and records are reported, never raised.
    """
    in_dir = Path(input_dir).expanduser().resolve()
    out_dir = Path(output_dir).expanduser().resolve()
    names = resolve_datasets(datasets)
    cli_splits = _check_args(splits, box_format)
    check_input_dir(in_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "input_dir": str(in_dir),
        "output_dir": str(out_dir),
        "box_format": box_format,
        "datasets": names,
        "splits": cli_splits,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tool_version": TOOL_VERSION,
    }
    cache = ImageCache()
    results: list[SplitResult] = []
    entries: dict[tuple[str, str], dict] = {}
    for name in names:
        for res in convert_dataset(
            in_dir, FLARE_DATASETS[name], cli_splits, cache, box_format, verbose, progress
        ):
            output_file = out_dir / f"{name}_{res.split}.json" if res.readable_sources else None
            if output_file is not None:
                write_json_atomic(output_file, res.records)
            results.append(res)
            entries[(name, res.split)] = _entry(res, output_file, settings)
    touched = {(n, s) for n in names for c in cli_splits for s in OUTPUT_SPLITS_OF[c]}
    report_path = out_dir / REPORT_NAME
    report = merge_report(load_report(report_path), results, entries, touched, settings)
    report["last_run"] = {"entries": [list(k) for k in entries], "distinct_images_checked": len(cache)}
    write_json_atomic(report_path, report)
    return report


# ----------------------------------------------------------------------------------------------------------
# The summary
# ----------------------------------------------------------------------------------------------------------

_SHORT = {
    SKIP_MISSING_IMAGE: "missing img",
    SKIP_CORRUPT_IMAGE: "corrupt img",
    SKIP_EMPTY_ANSWER: "empty ans",
    SKIP_DUPLICATE: "duplicate",
    SKIP_UNKNOWN_TASK: "unknown task",
    SKIP_INVALID_RECORD: "invalid",
    SKIP_UNPARSABLE_ANSWER: "unparsable",
}


def _summary_rows(report: dict, pairs: Iterable[Sequence[str]] | None) -> list[tuple[str, str, dict]]:
    wanted = pairs if pairs is not None else report.get("last_run", {}).get("entries", [])
    datasets = report.get("datasets", {})
    return [(d, s, datasets[d][s]) for d, s in (tuple(p) for p in wanted) if s in datasets.get(d, {})]


def summary_table(report: dict, pairs: Iterable[Sequence[str]] | None = None) -> Table:
    """A rich table of raw / converted / skipped (by reason) per dataset and split; ``pairs`` limits it to
    those (dataset, split) entries (default: the last run's)."""
    rows = _summary_rows(report, pairs)
    reasons = [r for r in SKIP_REASONS if any(e["skipped_by_reason"].get(r) for _, _, e in rows)]
    table = Table(title="FLARE25 -> Qwen3-VL conversion")
    table.add_column("dataset", no_wrap=True)
    table.add_column("split", no_wrap=True)
    for col in ("raw", "converted", "skipped", *(_SHORT.get(r, r) for r in reasons)):
        table.add_column(col, justify="right")
    sums: Counter = Counter()
    for dataset, split, e in rows:
        counts = [
            e["raw"],
            e["converted"],
            e["skipped"],
            *(e["skipped_by_reason"].get(r, 0) for r in reasons),
        ]
        sums.update(dict(enumerate(counts)))
        style = "yellow" if e.get("file_errors") or e.get("output_file") is None else None
        table.add_row(dataset, split, *(str(c) for c in counts), style=style)
    if rows:
        table.add_section()
        table.add_row("total", "", *(str(sums[i]) for i in range(3 + len(reasons))))
    return table


def summary_notes(report: dict, pairs: Iterable[Sequence[str]] | None = None) -> list[str]:
    """One line per entry with something to say: file errors, absent folders, no output written."""
    notes = []
    for dataset, split, e in _summary_rows(report, pairs):
        items = [f"{err['reason']}: {err['detail']}" for err in e.get("file_errors", [])]
        items += [f"no folder {p}" for p in e.get("missing_folders", [])]
        if e.get("answers_ignored"):
            items.append(f"{e['answers_ignored']} non-empty answers ignored (inference inputs)")
        if e.get("output_file") is None:
            items.append("no output file written")
        notes += [f"{dataset} {split}: {item}" for item in items]
    return notes
