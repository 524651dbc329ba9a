"""Model Tests: the processor and the training dataset, loaded as training loads them, and real samples encoded
through the training code path.

The processor is loaded with the run's pixel limits, the datasets go through ``build_supervised_dataset``
exactly as ``train_qwen.py`` builds them (every record length-checked against ``--model_max_length``; over-long
records counted, as training drops them), and ``--num_samples`` samples are encoded by
``SupervisedDataset.__getitem__``: the ``<|image_pad|>`` count must equal ``sum(image_grid_thw.prod() //
merge**2)``, the pixel rows ``sum(image_grid_thw.prod())``, the length the pre-check's estimate, and the
supervised tokens must decode to the answer plus ``<|im_end|>``.
"""

from __future__ import annotations

import logging
import os
import random
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwenvl.flare import defaults
from qwenvl.tools.data_check.annotations import AnnotationResult
from qwenvl.tools.data_check.config import DEMO_MODEL_FILES, DataCheckConfig, Emit


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


# ------------------------------------------------------------------------------------------ the processor
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
        f"{defaults.MODEL} --local-dir {folder}`), or add --demo_model to check the pipeline with the embedded "
        f"tiny model (same tokenizer, chat template and image processor settings as {defaults.MODEL})."
    )


def load_processor_offline_first(name: str, min_pixels: int, max_pixels: int) -> Any:
    """Load the processor from a local folder or the local HF cache; ask the hub only when it answers.

    Raises :class:`ProcessorUnavailable` with a one-paragraph explanation (never a traceback) otherwise.
    """
    from qwenvl.train.recipe import load_training_processor

    local = Path(name).expanduser()
    is_hub_id = not local.exists() and name.count("/") <= 1 and not name.startswith((".", "/", "~"))
    if not local.exists() and not is_hub_id:
        raise _unavailable(name, f"the folder {local} does not exist")
    try:
        return load_training_processor(
            name, min_pixels, max_pixels, **({"local_files_only": True} if is_hub_id else {})
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
        return load_training_processor(name, min_pixels, max_pixels)
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


# ----------------------------------------------------------------------------- processor and dataset loading
def load_processor_and_dataset(
    res: ModelResult, dataset_names: list[str], cfg: DataCheckConfig, processor: Any = None
) -> tuple[Any, Any]:
    """The processor and the training dataset the samples are encoded with, loaded as training loads them.

    The processor is loaded from ``res.model_path`` (offline first, :func:`load_processor_offline_first`) with
    ``cfg``'s pixel limits, or is ``processor`` with those limits applied; the dataset is built from
    ``dataset_names`` by the training recipe's own step (:func:`qwenvl.train.recipe.load_training_datasets`). Returns
    ``(processor, dataset)``; what cannot be loaded is ``None``, with the reason in ``res.load_error`` (the
    processor) or ``res.dataset_error`` (the dataset). ``res.processor_loaded`` / ``res.processor_info`` describe
    a loaded processor.
    """
    from qwenvl.data import plan_image_budgets

    try:  # the image budgets training gives these datasets
        names = ",".join(dataset_names) or "none"
        plan = plan_image_budgets(names, cfg.pixel_policy, cfg.min_pixels, cfg.max_pixels)
    except ValueError as e:
        res.dataset_error = str(e)
        return None, None
    default = plan.default
    if processor is None:
        try:
            processor = load_processor_offline_first(res.model_path, default.min_pixels, default.max_pixels)
        except ProcessorUnavailable as e:
            res.load_error = str(e)
            return None, None
    else:
        from qwenvl.model.loading import set_pixel_limits

        set_pixel_limits(processor, default.min_pixels, default.max_pixels)
    from qwenvl.model.loading import pixel_budget

    budget = pixel_budget(processor)
    res.processor_loaded = True
    res.processor_info = (
        f"{type(processor).__name__} from {res.model_path} (pixels {budget.min_pixels}..{budget.max_pixels}, "
        f"patch {budget.patch_size}, merge {budget.merge_size})"
    )
    if not dataset_names:
        res.dataset_error = "no dataset with a readable annotation file to build"
        return processor, None
    from qwenvl.train.recipe import load_training_datasets

    try:
        with _quiet("qwenvl.data.dataset"):
            dataset, _ = load_training_datasets(
                processor, ",".join(dataset_names), cfg.model_max_length, cfg.seed, pixel_plan=plan
            )
    except (KeyError, ValueError) as e:
        res.dataset_error = str(e.args[0]) if e.args else str(e)
        return processor, None
    return processor, dataset


# ------------------------------------------------------------------------------------------- the samples
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
    names = [d.name for d in ann.datasets if d.file_error is None]
    processor, dataset = load_processor_and_dataset(res, names, cfg, processor)
    if dataset is None:
        return res
    res.report = dataset.report
    for i in _pick_samples(dataset, cfg.num_samples, cfg.seed):
        res.samples.append(check_sample(dataset, i, processor, cfg.model_max_length))
    if not res.samples:
        res.dataset_error = "no sample left after the training data check (see the drops above)"
    return res
