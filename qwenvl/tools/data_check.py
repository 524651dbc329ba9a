"""Check the training data before a run: annotations, images, and samples through the real training code path.

Three sections, each PASSED or FAILED, then the summary of the user's guide (``TEST SUMMARY``):

1. **Annotation Tests** - for every selected registered dataset: the file exists, is a JSON list of objects,
   each record has ``image`` and ``conversations`` (human and gpt turns, a non-empty answer), and the number of
   ``<image>`` tags equals the number of images. Totals per dataset and overall.
2. **Image Tests** - every referenced image is checked for existence; a seeded sample (``--num_images``, spread
   across the datasets; ``--all_images`` for all) is decoded with the training loader (``load_rgb``). Missing and
   corrupt images are listed with the dataset and record that uses them.
3. **Model Tests** - the processor is loaded (with the run's pixel limits), the datasets go through
   ``build_supervised_dataset`` exactly as ``train_qwen.py`` builds them (every record length-checked against
   ``--model_max_length``; over-long records counted, as training drops them), and ``--num_samples`` samples
   are encoded by ``SupervisedDataset.__getitem__``: the ``<|image_pad|>`` count must equal
   ``sum(image_grid_thw.prod() // merge**2)``, the pixel rows ``sum(image_grid_thw.prod())``, the length the
   pre-check's estimate, and the supervised tokens must decode to the answer plus ``<|im_end|>``.

Datasets checked by default: every registered entry whose ``split`` is ``train`` (a converted
``<dataset>_train.json``), plus entries registered through ``$QWENVL_EXTRA_DATASETS`` (no split) that are
``labelled``. Validation, hidden-validation and test files are not training data and are left out.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwenvl.flare.paths import REPO_ROOT, default_converted_dir
from qwenvl.flare.schema import IMAGE_TAG

DEFAULT_MODEL = "Qwen/Qwen3-VL-4B-Instruct"
DEMO_MODEL_DIR = REPO_ROOT / "demo" / "model"
DEMO_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
DEFAULT_NUM_IMAGES = 25
DEFAULT_NUM_SAMPLES = 8
DEFAULT_MODEL_MAX_LENGTH = 4096
DEFAULT_MIN_PIXELS = 784
DEFAULT_MAX_PIXELS = 50176
DEFAULT_SEED = 42
MAX_LISTED = 10  # offending records / images listed per kind before "... and N more"
CONVERT_COMMAND = "uv run python data_conversion/convert_flare_to_qwen3vl.py"
RULE = "=" * 80

# Annotation issue kinds.
NOT_AN_OBJECT = "not_an_object"
MISSING_KEYS = "missing_keys"
BAD_IMAGE_FIELD = "bad_image_field"
BAD_CONVERSATIONS = "bad_conversations"
TAG_MISMATCH = "tag_mismatch"
EMPTY_ANSWER = "empty_answer"
PARSER_REJECTS = "training_parser_rejects"
ISSUE_FIXES = {
    NOT_AN_OBJECT: "each record must be a JSON object (data_conversion/schema.py); re-run the converter",
    MISSING_KEYS: "each record needs 'image' and 'conversations' (data_conversion/schema.py)",
    BAD_IMAGE_FIELD: "'image' must be a path or a list of paths",
    BAD_CONVERSATIONS: "'conversations' must list {'from': 'human' | 'gpt', 'value': text} turns, with a human and a gpt turn",
    TAG_MISMATCH: "write one '<image>' in the human turn per image, in the order of 'image'; re-run the converter",
    EMPTY_ANSWER: "a training record needs its answer; inference inputs (val_hidden / test) are not training data",
    PARSER_REJECTS: "the training code (qwenvl/data/processing.py) cannot read this record",
}

Emit = Callable[[str], None]


# ------------------------------------------------------------------------------------------- config
@dataclass
class DataCheckConfig:
    """What to check and with which settings (the command line of ``scripts/test_data_loading.py``)."""

    datasets: list[str] | None = None  # None: every registered labelled training dataset
    num_images: int = DEFAULT_NUM_IMAGES
    all_images: bool = False
    num_samples: int = DEFAULT_NUM_SAMPLES
    model_path: str = DEFAULT_MODEL
    demo_model: bool = False
    demo_model_dir: Path = DEMO_MODEL_DIR
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    converted_dir: Path | None = None  # None: $FLARE25_CONVERTED_DIR, else <repo>/converted_data
    seed: int = DEFAULT_SEED


# ------------------------------------------------------------------------------------- annotation tests
@dataclass(frozen=True)
class RecordIssue:
    """A problem with one record (``index``) of an annotation file."""

    index: int
    kind: str
    detail: str


@dataclass
class DatasetAnnotations:
    """Annotation check of one registered dataset."""

    name: str
    path: str
    data_path: str = ""
    records: int = 0
    image_refs: int = 0
    file_error: str | None = None  # missing file, invalid JSON, not a list, unlabelled: nothing else checked
    issues: list[RecordIssue] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)  # resolved path -> first record index using it

    @property
    def passed(self) -> bool:
        return self.file_error is None and not self.issues


@dataclass
class AnnotationResult:
    """Annotation Tests: one entry per dataset, plus selection errors (unknown names, nothing registered)."""

    converted_dir: str
    datasets: list[DatasetAnnotations] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def total_records(self) -> int:
        return sum(d.records for d in self.datasets)

    @property
    def passed(self) -> bool:
        return bool(self.datasets) and not self.errors and all(d.passed for d in self.datasets)


def _is_training_entry(entry: dict) -> bool:
    if "split" in entry:
        return entry["split"] == "train"
    return bool(entry.get("labelled", True))


def select_datasets(
    names: Sequence[str] | None, converted_dir: Path | None
) -> tuple[list[tuple[str, dict]], list[str]]:
    """Registry entries to check, and errors for names that are not registered.

    ``names`` may hold registry names, ``name%NN`` (the rate is ignored: whole files are checked), comma-separated
    lists or paths to Qwen3-VL JSON files. ``converted_dir`` rebuilds the registry from that folder first.
    """
    import qwenvl.data as registry

    if converted_dir is not None:
        registry.refresh_registry(converted_dir)
    if not names:
        chosen = [(n, e) for n, e in registry.data_dict.items() if _is_training_entry(e)]
        return chosen, []
    chosen, errors = [], []
    try:
        parsed = registry.parse_dataset_use(",".join(names))
    except ValueError as e:
        return [], [str(e)]
    for name, _rate in parsed:
        if name in registry.data_dict:
            chosen.append((name, registry.data_dict[name]))
        elif name.endswith(".json"):
            chosen.append(
                (
                    name,
                    {
                        "annotation_path": str(Path(name).expanduser().resolve()),
                        "data_path": "",
                        "labelled": True,
                    },
                )
            )
        else:
            try:
                registry.resolve_datasets(name)
            except (KeyError, ValueError) as e:
                errors.append(str(e.args[0]) if e.args else str(e))
    return chosen, errors


def _conversation_problem(conv: Any) -> str | None:
    if not isinstance(conv, list) or not conv:
        return "'conversations' is not a non-empty list"
    for k, turn in enumerate(conv):
        if (
            not isinstance(turn, dict)
            or turn.get("from") not in ("human", "gpt")
            or not isinstance(turn.get("value"), str)
        ):
            return f"turn {k} is not {{'from': 'human' | 'gpt', 'value': <text>}}: {str(turn)[:80]}"
    roles = {turn["from"] for turn in conv}
    if roles != {"human", "gpt"}:
        return f"no {'gpt' if 'gpt' not in roles else 'human'} turn"
    return None


def check_record(rec: Any) -> list[tuple[str, str]]:
    """``(kind, detail)`` problems of one converted record; empty when it is fit for training."""
    if not isinstance(rec, dict):
        return [(NOT_AN_OBJECT, f"a {type(rec).__name__}, not a JSON object")]
    missing = [k for k in ("image", "conversations") if k not in rec]
    if missing:
        return [(MISSING_KEYS, f"missing key(s) {', '.join(repr(k) for k in missing)}")]
    img = rec["image"]
    images = [img] if isinstance(img, str) else img
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
        return [(BAD_IMAGE_FIELD, f"'image' is {str(img)[:80]!r}")]
    problem = _conversation_problem(rec["conversations"])
    if problem:
        return [(BAD_CONVERSATIONS, problem)]
    out = []
    n_tags = sum(t["value"].count(IMAGE_TAG) for t in rec["conversations"] if t["from"] == "human")
    if n_tags != len(images):
        out.append(
            (TAG_MISMATCH, f"{n_tags} {IMAGE_TAG} tag(s) in the human turn(s) but {len(images)} image(s)")
        )
    if any(t["from"] == "gpt" and not t["value"].strip() for t in rec["conversations"]):
        out.append((EMPTY_ANSWER, "a gpt turn has an empty answer"))
    if not out:
        from qwenvl.data.processing import record_to_messages

        try:
            record_to_messages(rec)
        except ValueError as e:
            out.append((PARSER_REJECTS, str(e)))
    return out


def check_annotation_file(name: str, entry: dict) -> DatasetAnnotations:
    """Annotation checks of one registered file: existence, JSON list, and every record (see :func:`check_record`)."""
    import json

    path = entry["annotation_path"]
    result = DatasetAnnotations(name=name, path=path, data_path=entry.get("data_path", ""))
    if not entry.get("labelled", True):
        result.file_error = (
            f"{path} holds inference inputs without answers (val_hidden / test), not training data"
        )
        return result
    if not os.path.isfile(path):
        result.file_error = f"file not found: {path}"
        return result
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        result.file_error = f"not valid JSON: {path}: {e}"
        return result
    if not isinstance(records, list):
        result.file_error = f"{path} holds a JSON {type(records).__name__}, not a list of records"
        return result
    from qwenvl.data.dataset import resolve_image_path  # relative paths resolve as in training

    source = {"data_path": result.data_path, "file": path}
    result.records = len(records)
    for i, rec in enumerate(records):
        problems = check_record(rec)
        result.issues += [RecordIssue(i, kind, detail) for kind, detail in problems]
        if problems and problems[0][0] in (NOT_AN_OBJECT, MISSING_KEYS, BAD_IMAGE_FIELD):
            continue
        images = [rec["image"]] if isinstance(rec["image"], str) else rec["image"]
        result.image_refs += len(images)
        for p in images:
            result.images.setdefault(resolve_image_path(p, source), i)
    return result


def run_annotation_tests(cfg: DataCheckConfig) -> AnnotationResult:
    """Select the datasets and check each annotation file."""
    converted = Path(cfg.converted_dir) if cfg.converted_dir else default_converted_dir()
    result = AnnotationResult(converted_dir=str(converted))
    chosen, result.errors = select_datasets(cfg.datasets, cfg.converted_dir)
    if not chosen and not result.errors:
        result.errors.append(
            f"no labelled training dataset is registered (looked for <dataset>_train.json in {converted}). "
            f"Convert the data first: {CONVERT_COMMAND} --output_dir {converted}, or pass --converted_dir."
        )
    result.datasets = [check_annotation_file(name, entry) for name, entry in chosen]
    return result


def _listed(items: Sequence[str], limit: int = MAX_LISTED) -> list[str]:
    more = [f"... and {len(items) - limit} more"] if len(items) > limit else []
    return list(items[:limit]) + more


def format_annotations(res: AnnotationResult) -> list[str]:
    """Per-dataset lines of the Annotation Tests section."""
    lines = []
    width = max([len(d.name) for d in res.datasets] + [10])
    for d in res.datasets:
        mark = "✅" if d.passed else "❌"
        if d.file_error:
            lines.append(f"  {mark} {d.name.ljust(width)}  {d.file_error}")
            if "not found" in d.file_error or "not valid JSON" in d.file_error:
                lines.append(f"       fix: re-run the conversion ({CONVERT_COMMAND} --datasets ...)")
            continue
        lines.append(
            f"  {mark} {d.name.ljust(width)}  {d.records:>6} records  {len(d.images):>6} images  {d.path}"
        )
        by_kind: dict[str, list[RecordIssue]] = {}
        for issue in d.issues:
            by_kind.setdefault(issue.kind, []).append(issue)
        for kind, issues in by_kind.items():
            idx = ", ".join(str(i.index) for i in issues[:MAX_LISTED]) + (
                ", ..." if len(issues) > MAX_LISTED else ""
            )
            lines.append(f"       {len(issues)} record(s) {kind}: records {idx}")
            lines += [f"         record {i.index}: {i.detail}" for i in issues[:3]]
            lines.append(f"         fix: {ISSUE_FIXES[kind]}")
    lines += [f"  ❌ {e}" for e in res.errors]
    lines.append(f"  Total: {res.total_records} records in {len(res.datasets)} dataset(s)")
    return lines


# ------------------------------------------------------------------------------------------ image tests
@dataclass(frozen=True)
class ImageProblem:
    """A missing or undecodable image and the first record that uses it."""

    path: str
    dataset: str
    record: int
    detail: str

    def describe(self) -> str:
        return f"{self.path} ({self.dataset} record {self.record}){': ' + self.detail if self.detail else ''}"


@dataclass
class ImageResult:
    """Image Tests: existence of every referenced image, full decode of a seeded sample."""

    referenced: int = 0
    tested: int = 0
    per_dataset: dict[str, int] = field(default_factory=dict)  # decoded per dataset
    missing: list[ImageProblem] = field(default_factory=list)
    corrupt: list[ImageProblem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.tested > 0 and not self.missing and not self.corrupt


def _sample_images(
    datasets: Sequence[DatasetAnnotations], existing: set[str], n: int | None, seed: int
) -> list[tuple[str, str]]:
    """``(dataset, path)`` pairs: each dataset's existing images shuffled by ``(seed, name)``, taken round-robin
    until ``n`` (None: all)."""
    queues = []
    for d in datasets:
        paths = [p for p in d.images if p in existing]
        random.Random(f"{seed}:{d.name}").shuffle(paths)
        queues.append((d.name, paths))
    chosen, seen = [], set()
    depth = 0
    while (n is None or len(chosen) < n) and any(depth < len(q) for _, q in queues):
        for name, q in queues:
            if depth < len(q) and q[depth] not in seen and (n is None or len(chosen) < n):
                chosen.append((name, q[depth]))
                seen.add(q[depth])
        depth += 1
    return chosen


def run_image_tests(ann: AnnotationResult, cfg: DataCheckConfig) -> ImageResult:
    """Existence of every image of the datasets, and a full decode (training loader) of a seeded sample."""
    from qwenvl.flare.images import load_rgb

    res = ImageResult()
    owner: dict[str, tuple[str, int]] = {}
    for d in ann.datasets:
        for path, index in d.images.items():
            owner.setdefault(path, (d.name, index))
    res.referenced = len(owner)
    existing = set()
    for path, (name, index) in owner.items():
        if os.path.isfile(path):
            existing.add(path)
        else:
            res.missing.append(ImageProblem(path, name, index, ""))
    for name, path in _sample_images(
        ann.datasets, existing, None if cfg.all_images else cfg.num_images, cfg.seed
    ):
        res.tested += 1
        res.per_dataset[name] = res.per_dataset.get(name, 0) + 1
        try:
            with load_rgb(path) as img:
                if img.width < 1 or img.height < 1:
                    raise ValueError(f"empty image {img.size}")
        except Exception as e:  # noqa: BLE001 - whatever the decoder raises, training would skip this sample
            name, index = owner[path]
            res.corrupt.append(ImageProblem(path, name, index, f"{type(e).__name__}: {e}"))
    return res


def format_images(res: ImageResult) -> list[str]:
    """Lines of the Image Tests section."""
    lines = [f"  {name}: {n} decoded" for name, n in res.per_dataset.items()]
    lines.append(
        f"  Existence checked for all {res.referenced} referenced images; {res.tested} fully decoded"
    )
    if res.missing:
        lines.append(f"  ❌ {len(res.missing)} missing image(s) (training drops their records):")
        lines += [f"       {line}" for line in _listed([p.describe() for p in res.missing])]
    if res.corrupt:
        lines.append(f"  ❌ {len(res.corrupt)} corrupt image(s) (training would skip these samples):")
        lines += [f"       {line}" for line in _listed([p.describe() for p in res.corrupt])]
    if res.missing or res.corrupt:
        lines.append(
            "       fix: restore the images from the original FLARE25 download and re-run the conversion "
            "(it skips and reports records whose images are missing or corrupt)"
        )
    if res.tested == 0:
        lines.append(
            "  ❌ no image to test (no dataset passed the annotation checks, or every image is missing)"
        )
    return lines


# ------------------------------------------------------------------------------------------ model tests
@dataclass
class SampleCheck:
    """One sample encoded by ``SupervisedDataset.__getitem__`` and what was verified about it."""

    dataset: str
    index: int
    file: str
    n_images: int = 0
    grid: list[list[int]] = field(default_factory=list)
    image_tokens: int = 0
    expected_image_tokens: int = 0
    pixel_rows: int = 0
    length: int = 0
    estimated_length: int = 0
    supervised: int = 0
    supervised_text: str = ""
    encoded: bool = False  # False when __getitem__ returned None (an image failed to load)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class ModelResult:
    """Model Tests: processor, the training dataset's own check, and encoded samples."""

    model_path: str
    processor_loaded: bool = False
    processor_info: str = ""
    load_error: str | None = None
    dataset_error: str | None = None
    report: dict[str, Any] | None = None
    samples: list[SampleCheck] = field(default_factory=list)

    @property
    def over_length(self) -> list[dict[str, Any]]:
        return [d for d in (self.report or {}).get("dropped", []) if d["reason"] == "over_length"]

    @property
    def passed(self) -> bool:
        return (
            self.processor_loaded
            and self.dataset_error is None
            and bool(self.samples)
            and all(s.passed for s in self.samples)
        )


def ensure_demo_model(folder: Path, emit: Emit) -> Path:
    """The embedded tiny Qwen3-VL in ``folder``, built there (offline, seconds) when absent."""
    if all((folder / f).is_file() for f in DEMO_MODEL_FILES):
        return folder
    from qwenvl.model.tiny import build_tiny_model

    emit(f"  Building the embedded tiny demo model into {folder} (offline, a few seconds)...")
    return build_tiny_model(folder)


def _hub_reachable(timeout: float = 5.0) -> bool:
    try:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session

        get_session().head(constants.ENDPOINT, timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - DNS failure, refused, timeout, proxy: all mean "cannot download"
        return False


class ProcessorUnavailable(Exception):
    """The processor cannot be loaded; the message is one paragraph naming the path and the fix."""


def _unavailable(name: str, reason: str) -> ProcessorUnavailable:
    folder = f"/models/{name.rstrip('/').split('/')[-1]}"
    return ProcessorUnavailable(
        f"Could not load the processor of {name!r}: {reason}. The Model Tests need the model's processor "
        f"(tokenizer, chat template, image processor). Fix: pass a local model folder with --model_path, e.g. "
        f"--model_path {folder} (download it where there is internet: `huggingface-cli download "
        f"{DEFAULT_MODEL} --local-dir {folder}`), or add --demo_model to check the pipeline with the embedded "
        f"tiny model (same tokenizer, chat template and image processor settings as {DEFAULT_MODEL})."
    )


def load_processor_offline_first(name: str, min_pixels: int, max_pixels: int) -> Any:
    """Load the processor from a local folder or the local HF cache; ask the hub only when it answers.

    Raises :class:`ProcessorUnavailable` with a one-paragraph explanation (never a traceback) otherwise.
    """
    from qwenvl.model.loading import load_processor

    local = Path(name).expanduser()
    is_hub_id = not local.exists() and name.count("/") <= 1 and not name.startswith((".", "/", "~"))
    if not local.exists() and not is_hub_id:
        raise _unavailable(name, f"the folder {local} does not exist")
    try:
        return load_processor(
            name,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            **({"local_files_only": True} if is_hub_id else {}),
        )
    except Exception as e:  # noqa: BLE001 - every failure becomes the explanation below
        first_error = e
    if not is_hub_id:
        raise _unavailable(name, f"{type(first_error).__name__}: {str(first_error).splitlines()[0][:300]}")
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or not _hub_reachable():
        raise _unavailable(
            name,
            f"it is not a local folder, its files are not in the Hugging Face cache ({cache}), and the hub cannot be reached",
        )
    try:
        return load_processor(name, min_pixels=min_pixels, max_pixels=max_pixels)
    except Exception as e:  # noqa: BLE001
        raise _unavailable(name, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from None


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a logger's warnings while this tool reports the same facts itself."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _pick_samples(dataset: Any, n: int, seed: int) -> list[int]:
    """Indices of ``n`` kept samples spread round-robin across datasets, each dataset's order seeded."""
    by_name: dict[str, list[int]] = {}
    for i, sample in enumerate(dataset.samples):
        by_name.setdefault(sample.source["dataset"], []).append(i)
    for name, idx in by_name.items():
        random.Random(f"{seed}:{name}").shuffle(idx)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n and any(depth < len(v) for v in by_name.values()):
        for idx in by_name.values():
            if depth < len(idx) and len(chosen) < n:
                chosen.append(idx[depth])
        depth += 1
    return chosen


def _expected_supervision(record: dict) -> str:
    return "".join(t["value"] + "<|im_end|>" for t in record["conversations"] if t["from"] == "gpt")


def check_sample(dataset: Any, i: int, processor: Any, model_max_length: int) -> SampleCheck:
    """Encode sample ``i`` with ``dataset[i]`` (the training path) and verify tokens, pixels and labels."""
    sample = dataset.samples[i]
    src = sample.source
    chk = SampleCheck(
        dataset=src["dataset"], index=src["index"], file=src["file"], n_images=len(sample.image_paths)
    )
    chk.estimated_length = sample.length
    with _quiet("qwenvl.data.dataset"):
        item = dataset[i]
    if item is None:
        chk.problems.append(
            f"an image cannot be loaded: {', '.join(sample.image_paths)} (training skips this sample)"
        )
        return chk
    chk.encoded = True
    ids, labels = item["input_ids"], item["labels"]
    image_id = getattr(processor, "image_token_id", None) or processor.tokenizer.convert_tokens_to_ids(
        "<|image_pad|>"
    )
    merge = int(processor.image_processor.merge_size)
    grid = item.get("image_grid_thw")
    chk.grid = grid.tolist() if grid is not None else []
    chk.image_tokens = int((ids == image_id).sum())
    chk.expected_image_tokens = sum(t * h * w for t, h, w in chk.grid) // (merge * merge)
    chk.pixel_rows = int(item["pixel_values"].shape[0]) if "pixel_values" in item else 0
    chk.length = int(ids.numel())
    supervised = labels[labels != -100]
    chk.supervised = int(supervised.numel())
    chk.supervised_text = processor.tokenizer.decode(supervised.tolist(), skip_special_tokens=False)
    _verify(chk, sample.record, model_max_length)
    return chk


def _verify(chk: SampleCheck, record: dict, model_max_length: int) -> None:
    if len(chk.grid) != chk.n_images:
        chk.problems.append(f"{len(chk.grid)} image grid(s) for {chk.n_images} image(s)")
    if chk.image_tokens != chk.expected_image_tokens or chk.image_tokens == 0:
        chk.problems.append(
            f"{chk.image_tokens} <|image_pad|> tokens, expected {chk.expected_image_tokens} (sum of grid_thw.prod() // merge^2)"
        )
    if chk.pixel_rows != sum(t * h * w for t, h, w in chk.grid):
        chk.problems.append(f"{chk.pixel_rows} pixel rows for grids {chk.grid}")
    if chk.length != chk.estimated_length:
        chk.problems.append(
            f"{chk.length} tokens but the pre-training length check estimated {chk.estimated_length}"
        )
    if chk.length > model_max_length:
        chk.problems.append(f"{chk.length} tokens > model_max_length {model_max_length}")
    if chk.supervised == 0:
        chk.problems.append("no supervised token: the loss would ignore this sample")
    expected = unicodedata.normalize("NFC", _expected_supervision(record))
    if unicodedata.normalize("NFC", chk.supervised_text) != expected:
        chk.problems.append(
            f"supervised tokens decode to {chk.supervised_text[:120]!r}, expected {expected[:120]!r}"
        )


def run_model_tests(
    ann: AnnotationResult, cfg: DataCheckConfig, emit: Emit, processor: Any = None
) -> ModelResult:
    """Processor, ``build_supervised_dataset`` over the datasets whose files are readable, and sample encoding."""
    model_path = str(ensure_demo_model(cfg.demo_model_dir, emit)) if cfg.demo_model else cfg.model_path
    res = ModelResult(model_path=model_path)
    if processor is None:
        try:
            processor = load_processor_offline_first(model_path, cfg.min_pixels, cfg.max_pixels)
        except ProcessorUnavailable as e:
            res.load_error = str(e)
            return res
    else:
        from qwenvl.model.loading import set_pixel_limits

        set_pixel_limits(processor, cfg.min_pixels, cfg.max_pixels)
    from qwenvl.model.loading import pixel_budget

    budget = pixel_budget(processor)
    res.processor_loaded = True
    res.processor_info = (
        f"{type(processor).__name__} from {model_path} (pixels {budget.min_pixels}..{budget.max_pixels}, "
        f"patch {budget.patch_size}, merge {budget.merge_size})"
    )
    names = [d.name for d in ann.datasets if d.file_error is None]
    if not names:
        res.dataset_error = "no dataset with a readable annotation file to build"
        return res
    from qwenvl.data.dataset import build_supervised_dataset

    try:
        with _quiet("qwenvl.data.dataset"):
            dataset = build_supervised_dataset(
                ",".join(names), processor, cfg.model_max_length, seed=cfg.seed
            )
    except (KeyError, ValueError) as e:
        res.dataset_error = str(e.args[0]) if e.args else str(e)
        return res
    res.report = dataset.report
    for i in _pick_samples(dataset, cfg.num_samples, cfg.seed):
        res.samples.append(check_sample(dataset, i, processor, cfg.model_max_length))
    if not res.samples:
        res.dataset_error = "no sample left after the training data check (see the drops above)"
    return res


def _grid_text(grid: list[list[int]]) -> str:
    return ", ".join("x".join(map(str, g)) for g in grid) or "-"


def format_model(res: ModelResult, model_max_length: int) -> list[str]:
    """Lines of the Model Tests section."""
    if not res.processor_loaded:
        return [f"  ❌ {res.load_error}"]
    lines = [f"  Processor: {res.processor_info}"]
    if res.report is not None:
        from qwenvl.data.dataset import format_report

        lines += ["  " + line for line in format_report(res.report).splitlines()]
        over = res.over_length
        lines.append(
            f"  Samples over --model_max_length {model_max_length}: {len(over)} (training drops them, never truncates)"
        )
        lines += [f"       {d['dataset']} record {d['index']}: {d['detail']}" for d in over[:MAX_LISTED]]
        other = [d for d in res.report["dropped"] if d["reason"] != "over_length"]
        if other:
            lines.append(f"  Other records the training data check drops: {len(other)}")
            lines += [
                f"       {d['dataset']} record {d['index']}: {d['reason']}: {d['detail']}"
                for d in other[:MAX_LISTED]
            ]
    if res.dataset_error:
        lines.append(f"  ❌ {res.dataset_error}")
    if res.samples:
        lines.append("  Samples encoded by SupervisedDataset.__getitem__ (the training code path):")
    for s in res.samples:
        mark = "✅" if s.passed else "❌"
        if not s.encoded:
            lines.append(f"  {mark} {s.dataset} record {s.index}: {s.n_images} image(s), not encoded")
        else:
            lines.append(
                f"  {mark} {s.dataset} record {s.index}: {s.n_images} image(s), grid {_grid_text(s.grid)} -> "
                f"{s.image_tokens} <|image_pad|> (expected {s.expected_image_tokens}), {s.length} tokens, "
                f"{s.supervised} supervised: {s.supervised_text[:60]!r}"
            )
        lines += [f"       problem: {p}" for p in s.problems]
    return lines


# ---------------------------------------------------------------------------------------------- runner
@dataclass
class DataCheckResult:
    """All three sections; ``passed`` only when every one passed."""

    annotations: AnnotationResult
    images: ImageResult
    model: ModelResult

    @property
    def passed(self) -> bool:
        return self.annotations.passed and self.images.passed and self.model.passed


def _verdict(ok: bool) -> str:
    return "✅ PASSED" if ok else "❌ FAILED"


def format_summary(res: DataCheckResult, cfg: DataCheckConfig) -> list[str]:
    """The guide's ``TEST SUMMARY`` block."""
    a, im, m = res.annotations, res.images, res.model
    lines = [RULE, "TEST SUMMARY", RULE, ""]
    lines += [
        f"📋 Annotation Tests: {_verdict(a.passed)}",
        f"   Total samples: {a.total_records}",
        f"   Datasets: {len(a.datasets)}",
    ]
    bad = (
        sum(len(d.issues) for d in a.datasets)
        + sum(d.file_error is not None for d in a.datasets)
        + len(a.errors)
    )
    if bad:
        lines.append(f"   Problems: {bad} (listed above)")
    lines += ["", f"📸 Image Tests: {_verdict(im.passed)}", f"   Images tested: {im.tested}"]
    lines.append(f"   Missing: {len(im.missing)}")
    lines += [f"      {line}" for line in _listed([p.path for p in im.missing], 5)]
    lines.append(f"   Corrupted: {len(im.corrupt)}")
    lines += [f"      {line}" for line in _listed([p.path for p in im.corrupt], 5)]
    lines += ["", f"🔧 Model Tests: {_verdict(m.passed)}"]
    if not m.processor_loaded:
        lines.append(f"   Processor not loaded: {m.model_path} (see above)")
    else:
        failed = sum(not s.passed for s in m.samples)
        lines.append(f"   Samples tested: {len(m.samples)}" + (f" ({failed} failed)" if failed else ""))
        if m.report is not None:
            n_over = len(m.over_length)
            warn = (
                " ⚠️ dropped from training (raise --model_max_length or lower --max_pixels)" if n_over else ""
            )
            lines.append(f"   Over model_max_length {cfg.model_max_length}: {n_over}{warn}")
        if m.dataset_error:
            lines.append(f"   {m.dataset_error}")
    lines += ["", RULE]
    if res.passed:
        lines.append("🎉 ALL TESTS PASSED - Ready for training!")
    else:
        failed_sections = [
            n for n, ok in (("Annotation", a.passed), ("Image", im.passed), ("Model", m.passed)) if not ok
        ]
        lines.append(
            f"❌ TESTS FAILED ({', '.join(failed_sections)}) - fix the problems above before training"
        )
    return lines + [RULE]


def _section(emit: Emit, title: str, first: bool = False) -> None:
    if not first:
        emit("")
    emit(RULE)
    emit(title)
    emit(RULE)


def run_data_checks(cfg: DataCheckConfig, emit: Emit = print, processor: Any = None) -> DataCheckResult:
    """Run the three sections in order, printing each as it completes, then the summary.

    ``processor`` (optional) skips loading one: the pixel limits of ``cfg`` are applied to it.
    """
    ann = run_annotation_tests(cfg)
    _section(emit, f"📋 ANNOTATION TESTS  (registry: {ann.converted_dir})", first=True)
    for line in format_annotations(ann):
        emit(line)
    scope = "all" if cfg.all_images else f"a seeded sample of {cfg.num_images}"
    _section(emit, f"📸 IMAGE TESTS  ({scope} decoded with the training loader, seed {cfg.seed})")
    images = run_image_tests(ann, cfg)
    for line in format_images(images):
        emit(line)
    _section(emit, f"🔧 MODEL TESTS  (model_max_length {cfg.model_max_length}, {cfg.num_samples} samples)")
    model = run_model_tests(ann, cfg, emit, processor)
    for line in format_model(model, cfg.model_max_length):
        emit(line)
    result = DataCheckResult(ann, images, model)
    emit("")
    for line in format_summary(result, cfg):
        emit(line)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/test_data_loading.py``."""
    p = argparse.ArgumentParser(
        prog="test_data_loading.py",
        description="Check the registered training data (annotations, images) and push real samples through the "
        "training code path with the model's processor. Exit status 0 only when every check passes.",
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        metavar="NAME",
        help="Registered names (or JSON paths) to check; default: every registered labelled training dataset.",
    )
    p.add_argument(
        "--num_images",
        type=int,
        default=DEFAULT_NUM_IMAGES,
        help="Images to decode, spread across datasets (default 25). Every image is checked for existence regardless.",
    )
    p.add_argument("--all_images", action="store_true", help="Decode every image instead of a sample.")
    p.add_argument(
        "--num_samples",
        type=int,
        default=DEFAULT_NUM_SAMPLES,
        help="Samples to encode in the Model Tests, spread across datasets (default 8).",
    )
    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--model_path",
        default=DEFAULT_MODEL,
        help=f"Model folder or hub id whose processor to use (default {DEFAULT_MODEL}).",
    )
    model.add_argument(
        "--demo_model",
        action="store_true",
        help=f"Use the embedded tiny Qwen3-VL in {DEMO_MODEL_DIR} (built there if absent).",
    )
    p.add_argument(
        "--model_max_length",
        type=int,
        default=DEFAULT_MODEL_MAX_LENGTH,
        help="Longest sample in tokens (default 4096), as in training.",
    )
    p.add_argument(
        "--max_pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="Image pixel budget, as in training (default 50176).",
    )
    p.add_argument(
        "--min_pixels",
        type=int,
        default=DEFAULT_MIN_PIXELS,
        help="Smallest image area, as in training (default 784).",
    )
    p.add_argument(
        "--converted_dir",
        type=Path,
        default=None,
        help="Converted-data folder (default $FLARE25_CONVERTED_DIR, else <repo>/converted_data).",
    )
    p.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="Seed of the image and sample choice (default 42)."
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/test_data_loading.py``: 0 when every section passed, 1 otherwise."""
    args = build_parser().parse_args(argv)
    if min(args.num_images, args.num_samples, args.model_max_length, args.min_pixels, args.max_pixels) < 1:
        print("error: --num_images, --num_samples, --model_max_length and the pixel limits must be positive")
        return 2
    if args.converted_dir is not None:
        os.environ["FLARE25_CONVERTED_DIR"] = str(args.converted_dir.expanduser().resolve())
    cfg = DataCheckConfig(
        datasets=args.datasets,
        num_images=args.num_images,
        all_images=args.all_images,
        num_samples=args.num_samples,
        model_path=args.model_path,
        demo_model=args.demo_model,
        model_max_length=args.model_max_length,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        converted_dir=args.converted_dir,
        seed=args.seed,
    )
    result = run_data_checks(cfg)
    return 0 if result.passed else 1


__all__ = [
    "AnnotationResult",
    "DataCheckConfig",
    "DataCheckResult",
    "ImageResult",
    "ModelResult",
    "ProcessorUnavailable",
    "SampleCheck",
    "build_parser",
    "check_annotation_file",
    "check_record",
    "ensure_demo_model",
    "load_processor_offline_first",
    "main",
    "run_annotation_tests",
    "run_data_checks",
    "run_image_tests",
    "run_model_tests",
    "select_datasets",
]
