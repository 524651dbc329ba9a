"""Batched greedy generation over converted records, with the prompts and pixel limits training used.

A prompt is the record rendered by the training code's own :func:`qwenvl.data.processing.record_to_messages`
minus its final assistant message, through the processor's chat template with ``add_generation_prompt=True``:
the tokens the model saw before each answer during training (:func:`build_prompt`). Images are loaded with
:func:`qwenvl.flare.images.load_rgb` and resized by the processor under the checkpoint's pixel limits
(:func:`resolve_pixel_limits`: ``--min/max_pixels`` if given, else the training arguments in the checkpoint's
``run_info.json``, else the processor's saved limits).

Rows are left-padded so every row's answer starts at the same column, the KV cache is on, and decoding is
greedy. Each record gets a token budget, and, unless ``free_decoding``, a format constraint: every answer
matches its task type's pattern and ends within the budget, so every answer parses
(:mod:`qwenvl.eval.constrained`). A record whose images cannot be loaded yields a :class:`Generation` with
``error`` set instead of stopping the run.

Anything with the :data:`Generator` signature (records in, one text or :class:`Generation` per record out, in
order) can stand in for :class:`BatchGenerator`: tests inject fakes that need no model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from qwenvl.data.processing import record_images, record_to_messages
from qwenvl.eval.constrained import (  # FALLBACK_MAX_NEW_TOKENS, max_new_tokens_for: re-exported for callers
    FALLBACK_MAX_NEW_TOKENS,  # noqa: F401
    AnswerPlanner,
    ConstraintStats,
    grammar_cache,
    max_new_tokens_for,  # noqa: F401
    model_vocab_size,
    record_task,
)
from qwenvl.flare.images import load_rgb
from qwenvl.flare.runfiles import RUN_INFO
from qwenvl.flare.tasks import normalize_task_type

log = logging.getLogger(__name__)


@dataclass
class Generation:
    """The model's answer to one record.

    ``text``: decoded new tokens (special tokens dropped); ``""`` when ``error`` is set. ``n_new_tokens``:
    tokens generated up to and including the end-of-turn token. ``finished``: the model ended its turn
    within the budget (``False`` = cut at ``max_new_tokens``). ``error``: why no generation was attempted.
    """

    text: str
    n_new_tokens: int = 0
    finished: bool = True
    error: str | None = None


# records -> one str or Generation per record, in order.
Generator = Callable[[Sequence[dict]], Sequence["Generation | str"]]


def as_generation(value: Generation | str) -> Generation:
    """A generator's output item as a :class:`Generation` (plain strings are finished answers)."""
    if isinstance(value, Generation):
        return value
    if isinstance(value, str):
        return Generation(text=value)
    raise TypeError(f"a generator must return str or Generation items, got {type(value).__name__}")


# ---------------------------------------------------------------------------------------------- records
def build_prompt(record: dict, processor: Any) -> str:
    """The generation prompt of a converted record: the chat-template text of ``record_to_messages(record)``
    without its final assistant message, ending with the ``<|im_start|>assistant\\n`` header.

    Training renders the same messages with the answer appended, so prompt + answer + ``<|im_end|>`` is
    exactly the text a training sample starts with."""
    messages = record_to_messages(record)
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text[0] if isinstance(text, list) else text


def resolve_record_image(path: str, record: dict) -> str:
    """An image path of a record: absolute as is; relative against the registry ``data_path`` or the
    annotation file's folder (``record["_source"]``, set by ``load_annotations``), else the working directory."""
    if os.path.isabs(path):
        return path
    source = record.get("_source") or {}
    base = source.get("data_path") or os.path.dirname(source.get("file", ""))
    return os.path.join(base, path)


def load_record_images(record: dict) -> list[Image.Image]:
    """The record's images as 8-bit RGB, in the order of its ``image`` field."""
    return [load_rgb(resolve_record_image(p, record)) for p in record_images(record)]


def make_record(
    images: Sequence[str | os.PathLike],
    question: str,
    task_type: str | None = None,
    box_format: str | None = None,
) -> dict:
    """A converted-format record for an ad-hoc question (one ``<image>`` tag per image, empty answer), so
    ad-hoc inference goes through the same prompt rendering and answer constraint as evaluation."""
    paths = [str(Path(p).expanduser().resolve()) for p in images]
    value = "<image>\n" * len(paths) + question
    meta = {"task_type": normalize_task_type(task_type) if task_type else None, "question": question}
    if box_format:
        meta["box_format"] = box_format
    return {
        "image": paths[0] if len(paths) == 1 else paths,
        "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": ""}],
        "meta": meta,
    }


# ----------------------------------------------------------------------------------------- pixel limits
@dataclass(frozen=True)
class PixelLimits:
    """Image area limits for the processor and where they came from (``argument``, ``run_info.json`` or
    ``processor``)."""

    min_pixels: int | None
    max_pixels: int | None
    source: str


def training_pixel_limits(model_path: str | os.PathLike) -> tuple[int | None, int | None]:
    """``(min_pixels, max_pixels)`` of the training run that wrote ``model_path`` (from its
    ``run_info.json``), ``(None, None)`` when there is no such file (a base model, a hub id)."""
    path = Path(model_path).expanduser() / RUN_INFO
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8")).get("arguments", {}).get("data", {})
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        log.warning("%s is not readable (%s); using the processor's pixel limits", path, exc)
        return None, None
    lo, hi = data.get("min_pixels"), data.get("max_pixels")
    return (int(lo) if lo is not None else None, int(hi) if hi is not None else None)


def resolve_pixel_limits(
    model_path: str | os.PathLike, min_pixels: int | None = None, max_pixels: int | None = None
) -> PixelLimits:
    """The limits to evaluate with: explicit arguments win, then the checkpoint's training arguments
    (``run_info.json``); ``None`` leaves the processor's own saved limit in place."""
    if min_pixels is not None and max_pixels is not None:
        return PixelLimits(min_pixels, max_pixels, "argument")
    run_min, run_max = training_pixel_limits(model_path)
    lo = min_pixels if min_pixels is not None else run_min
    hi = max_pixels if max_pixels is not None else run_max
    if run_min is None and run_max is None:
        source = "argument" if (min_pixels, max_pixels) != (None, None) else "processor"
    else:
        source = "argument+run_info.json" if (min_pixels, max_pixels) != (None, None) else RUN_INFO
    return PixelLimits(lo, hi, source)


# ------------------------------------------------------------------------------------------- generation
def greedy_config(model: Any, max_new_tokens: int, pad_token_id: int | None) -> Any:
    """A copy of the model's generation config set for greedy decoding with the KV cache. The sampling knobs
    get their neutral values (a ``None`` would be refilled from the model's ``generation_config.json``, e.g.
    Qwen's temperature 0.7, and draw a warning on every call)."""
    config = copy.deepcopy(model.generation_config)
    config.do_sample = False
    config.num_beams = 1
    config.temperature, config.top_p, config.top_k = 1.0, 1.0, 50
    config.max_new_tokens = max_new_tokens
    config.use_cache = True
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id
    return config


@contextlib.contextmanager
def left_padding(processor: Any) -> Iterator[None]:
    """Pad on the left while generating (every row's answer then starts at the same column)."""
    tokenizer = processor.tokenizer
    previous = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = previous


def _eos_ids(model: Any, processor: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end >= 0:
        ids.add(im_end)
    return ids


def _failure(exc: Exception) -> Generation:
    return Generation("", 0, False, f"{type(exc).__name__}: {exc}")


class BatchGenerator:
    """Greedy, batched, left-padded generation with a Qwen-VL model and its processor.

    ``generator(records)`` returns one :class:`Generation` per record, in order. Records are batched by
    token budget (:meth:`budget_for`) in their input order. ``max_new_tokens`` overrides every record's
    budget. Unless ``free_decoding``, every answer is held to its task type's pattern
    (:mod:`qwenvl.eval.constrained`); ``stats`` collects the time that costs. ``synced_gpus`` (ZeRO-3 with
    several ranks): every rank keeps stepping until all are done; all ranks must then call the generator
    together with the same number of batches.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        progress: bool = True,
        synced_gpus: bool | None = None,
        free_decoding: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.processor = processor
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        self.synced_gpus = synced_gpus
        self.free_decoding = free_decoding
        self.eos_ids = _eos_ids(model, processor)
        self.planner = AnswerPlanner(processor.tokenizer, max_new_tokens, free_decoding)
        self.stats = ConstraintStats()

    def budget_for(self, record: dict) -> int:
        """The record's new-token budget: the argument, else derived from its dataset's training answers,
        else its task type's default (:class:`~qwenvl.eval.constrained.AnswerPlanner`)."""
        return self.planner.budget_for(record)

    def budgets(self, records: Sequence[dict]) -> dict[str, int]:
        """``{"<dataset>/<task type>": budget}`` over ``records`` (what ``summary.json`` reports)."""
        out: dict[str, int] = {}
        for record in records:
            meta = record.get("meta") or {}
            out.setdefault(f"{meta.get('dataset', '?')}/{record_task(record)}", self.budget_for(record))
        return out

    def __call__(self, records: Sequence[dict]) -> list[Generation]:
        out: list[Generation | None] = [None] * len(records)
        groups: dict[int, list[int]] = {}
        for i, record in enumerate(records):
            groups.setdefault(self.budget_for(record), []).append(i)
        with tqdm(total=len(records), desc="generating", unit="rec", disable=not self.progress) as bar:
            for budget, indices in groups.items():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    for i, gen in zip(chunk, self.generate_batch([records[i] for i in chunk], budget)):
                        out[i] = gen
                    bar.update(len(chunk))
        return [g for g in out if g is not None]

    def _inputs(self, records: Sequence[dict]) -> list[tuple[str, list[Image.Image]] | Generation]:
        """Per record, its prompt and images, or a :class:`Generation` with ``error`` when they do not load."""
        out: list[tuple[str, list[Image.Image]] | Generation] = []
        for record in records:
            try:
                out.append((build_prompt(record, self.processor), load_record_images(record)))
            except (OSError, ValueError) as exc:
                out.append(_failure(exc))
        return out

    def _constraint(self, records: Sequence[dict]) -> Any:
        """A fresh logits processor holding each record to its pattern (fitted to the record's own budget,
        :meth:`budget_for`), ``None`` when none has one."""
        patterns = [self.planner.plan(record).pattern for record in records]
        if all(p is None for p in patterns):
            return None
        stop = tuple(sorted(self.eos_ids))
        cache = grammar_cache(self.processor.tokenizer, model_vocab_size(self.model), stop)
        return cache.logits_processor(patterns, self.stats)

    def _encode(self, items: Sequence[tuple[str, list[Image.Image]]]) -> dict[str, Any]:
        """Left-padded model inputs for ``(prompt, images)`` items (raises ``ValueError`` for an image the
        processor refuses, e.g. one more elongated than 200:1)."""
        prompts = [prompt for prompt, _ in items]
        images = [img for _, imgs in items for img in imgs]
        with left_padding(self.processor):
            return self.processor(text=prompts, images=images or None, padding=True, return_tensors="pt")

    def _refused(self, item: tuple[str, list[Image.Image]]) -> Generation | None:
        try:
            self._encode([item])
        except ValueError as exc:
            return _failure(exc)
        return None

    @torch.no_grad()
    def generate_batch(self, records: Sequence[dict], max_new_tokens: int) -> list[Generation]:
        """One padded batch through ``model.generate``. A record whose images do not load, or that the
        processor refuses, gets an error entry; the others are answered. ``max_new_tokens`` should be at
        least each record's :meth:`budget_for` (what :meth:`__call__` passes), or a constrained answer may
        be cut."""
        inputs: list[Any] = self._inputs(records)
        ready = [x for x in inputs if not isinstance(x, Generation)]
        try:
            batch = self._encode(ready) if ready else None
        except ValueError:  # find the record(s) the processor refuses, answer the rest
            inputs = [x if isinstance(x, Generation) else (self._refused(x) or x) for x in inputs]
            ready = [x for x in inputs if not isinstance(x, Generation)]
            batch = self._encode(ready) if ready else None
        answered = [r for r, x in zip(records, inputs) if not isinstance(x, Generation)]
        constraint = self._constraint(answered) if batch is not None else None
        answers = iter(self._generate(batch, max_new_tokens, constraint) if batch is not None else [])
        return [x if isinstance(x, Generation) else next(answers) for x in inputs]

    def _generate(
        self, batch: dict[str, Any], max_new_tokens: int, constraint: Any = None
    ) -> list[Generation]:
        from transformers import LogitsProcessorList

        device = next(self.model.parameters()).device
        batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
        config = greedy_config(self.model, max_new_tokens, self.processor.tokenizer.pad_token_id)
        processors = LogitsProcessorList([constraint] if constraint is not None else [])
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.model.generate(
                **batch, generation_config=config, logits_processor=processors, synced_gpus=self.synced_gpus
            )
        finally:
            self.model.train(was_training)
        new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
        return [self._decode(row) for row in new_tokens]

    def _decode(self, row: list[int]) -> Generation:
        end = next((k for k, tok in enumerate(row) if tok in self.eos_ids), None)
        kept = row if end is None else row[: end + 1]
        text = self.processor.tokenizer.decode(kept, skip_special_tokens=True)
        return Generation(text=text, n_new_tokens=len(kept), finished=end is not None)


# ---------------------------------------------------------------------------------------------- loading
def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> str:
    """bf16 on a GPU, fp32 on the CPU (bf16 matmuls are slow on most CPUs)."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


@dataclass
class LoadedModel:
    """A model and processor ready for :class:`BatchGenerator`, with the pixel limits applied."""

    model: Any
    processor: Any
    pixel_limits: PixelLimits
    device: str
    dtype: str


def load_for_generation(
    model_path: str | os.PathLike,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load any checkpoint (class from ``config.model_type``) and the processor saved beside it, with the
    training pixel limits (:func:`resolve_pixel_limits`). Raises
    :class:`qwenvl.model.loading.ModelNotFoundError` for a missing folder or an uncached hub id."""
    from qwenvl.model.loading import load_model, load_processor, pixel_budget

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    limits = resolve_pixel_limits(model_path, min_pixels, max_pixels)
    processor = load_processor(model_path, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels)
    budget = pixel_budget(processor)
    limits = PixelLimits(budget.min_pixels, budget.max_pixels, limits.source)
    model = load_model(model_path, dtype=dtype, attn_implementation=attn_implementation)
    model.to(device).eval()
    return LoadedModel(model, processor, limits, device, dtype)
