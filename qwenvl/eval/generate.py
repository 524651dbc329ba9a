"""Batched greedy generation over converted records, with the prompts and image budgets training used.

A prompt is the record rendered by the training code's own :func:`qwenvl.data.processing.record_to_messages`
minus its final assistant message, through the processor's chat template with ``add_generation_prompt=True``:
the tokens the model saw before each answer during training (:func:`build_prompt`). Images are loaded with
:func:`qwenvl.flare.images.load_rgb` and resized by the processor within the record's image budget: the
budget its dataset was trained with (:func:`resolve_pixel_plan`: ``--min/max_pixels`` if given, one budget for
every record; else the checkpoint's ``pixel_budgets`` in ``run_info.json``, a dataset it does not name getting
its global budget; else the processor's saved limits). Records are batched by token budget and image budget.

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
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from qwenvl.data.processing import image_size_kwargs, record_images, record_to_messages
from qwenvl.eval.constrained import (  # FALLBACK_MAX_NEW_TOKENS, max_new_tokens_for: re-exported for callers
    FALLBACK_MAX_NEW_TOKENS,  # noqa: F401
    AnswerPlanner,
    ConstraintStats,
    grammar_cache,
    max_new_tokens_for,  # noqa: F401
    model_vocab_size,
    record_task,
)
from qwenvl.flare import defaults
from qwenvl.flare.images import load_rgb
from qwenvl.flare.pixels import BudgetPlan, ImageBudget, record_dataset
from qwenvl.flare.runfiles import RUN_INFO, read_run_info
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

    @classmethod
    def failed(cls, exc: Exception) -> Generation:
        """The entry of a record that could not be generated for (its images do not load, the processor
        refuses them): ``error`` names the exception."""
        return cls("", 0, False, f"{type(exc).__name__}: {exc}")


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
    dataset: str | None = None,
) -> dict:
    """A converted-format record for an ad-hoc question (one ``<image>`` tag per image, empty answer), so
    ad-hoc inference goes through the same prompt rendering, image budget (``dataset``'s) and answer
    constraint as evaluation."""
    paths = [str(Path(p).expanduser().resolve()) for p in images]
    value = "<image>\n" * len(paths) + question
    meta = {"task_type": normalize_task_type(task_type) if task_type else None, "question": question}
    if dataset:
        meta["dataset"] = dataset
    if box_format:
        meta["box_format"] = box_format
    return {
        "image": paths[0] if len(paths) == 1 else paths,
        "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": ""}],
        "meta": meta,
    }


# ----------------------------------------------------------------------------------------- image budgets
SOURCE_ARGUMENT = "argument"  # --min_pixels / --max_pixels: one budget for every record
SOURCE_PROCESSOR = "processor"  # no run_info.json budgets: the processor's saved limits for every record


@dataclass(frozen=True)
class PixelPlan:
    """The image budgets to generate with and where they came from (``argument``, ``run_info.json`` or
    ``processor``). ``plan`` is ``None`` until the processor's own limits are known (source ``processor``)."""

    plan: BudgetPlan | None
    source: str

    def summary(self, records: Sequence[dict] = ()) -> dict[str, Any]:
        """What ``summary.json`` reports (``pixel_budgets``): policy, source, the global budget and the budget
        of each dataset of ``records`` (all the plan names when none are given)."""
        if self.plan is None:
            return {"source": self.source}
        names = [n for n in (record_dataset(r) for r in records) if n] if records else None
        block = self.plan.as_record()
        block["datasets"] = {
            name: {**budget.as_record(), "source": source}
            for name, budget, source in self.plan.table(dict.fromkeys(names) if names is not None else None)
        }
        return {
            "policy": self.plan.policy,
            "source": self.source,
            **{k: block[k] for k in ("global", "datasets")},
        }


def resolve_pixel_plan(
    model_path: str | os.PathLike, min_pixels: int | None = None, max_pixels: int | None = None
) -> PixelPlan:
    """The image budgets to evaluate with: ``min_pixels`` / ``max_pixels`` given, one budget for every record
    (the other limit from the checkpoint's global budget when it has one, else the guide's); else the
    checkpoint's own plan (``run_info.json``: each dataset its training budget, any other dataset the global
    one); else the processor's saved limits (``plan`` ``None``, filled in by :func:`load_for_generation`)."""
    trained = BudgetPlan.from_run_info(read_run_info(model_path))
    if min_pixels is not None or max_pixels is not None:
        base = (
            trained.default if trained is not None else ImageBudget(defaults.MIN_PIXELS, defaults.MAX_PIXELS)
        )
        low = int(min_pixels) if min_pixels is not None else min(base.min_pixels, int(max_pixels))
        budget = ImageBudget(low, int(max_pixels) if max_pixels is not None else base.max_pixels)
        problems = budget.problems("--min_pixels/--max_pixels")
        if problems:
            raise ValueError("; ".join(problems))
        return PixelPlan(BudgetPlan.single(budget), SOURCE_ARGUMENT)
    if trained is not None:
        return PixelPlan(trained, RUN_INFO)
    return PixelPlan(None, SOURCE_PROCESSOR)


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


def end_of_turn_ids(eos_token_id: int | list[int] | None, tokenizer: Any) -> set[int]:
    """The tokens that end an answer: a generation config's ``eos_token_id`` (one, a list or none) and
    ``<|im_end|>``."""
    ids = set(
        eos_token_id if isinstance(eos_token_id, list) else [] if eos_token_id is None else [eos_token_id]
    )
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end >= 0:
        ids.add(im_end)
    return ids


class GeneratorBase:
    """What every generation backend shares, so that the same record gets the same prompt, images, budgets
    and decoded answer on each: the record's token budget and answer pattern (``planner``,
    :class:`~qwenvl.eval.constrained.AnswerPlanner`), its image budget (``pixel_plan``: the budget of the
    record's dataset; without a plan, the processor's own limits), its prompt and images, and the reading of
    the new tokens up to the first end-of-turn token (``eos_ids``)."""

    def __init__(
        self,
        processor: Any,
        eos_ids: Iterable[int],
        max_new_tokens: int | None = None,
        progress: bool = True,
        free_decoding: bool = False,
        pixel_plan: BudgetPlan | None = None,
    ) -> None:
        self.processor = processor
        self.pixel_plan = pixel_plan if pixel_plan is not None else processor_plan(processor)
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        self.free_decoding = free_decoding
        self.eos_ids = set(eos_ids)
        self.planner = AnswerPlanner(processor.tokenizer, max_new_tokens, free_decoding)

    def budget_for(self, record: dict) -> int:
        """The record's new-token budget: the argument, else derived from its dataset's training answers,
        else its task type's default (:class:`~qwenvl.eval.constrained.AnswerPlanner`)."""
        return self.planner.budget_for(record)

    def image_budget_for(self, record: dict) -> ImageBudget:
        """The image budget of the record's dataset (the one it was trained with)."""
        return self.pixel_plan.for_record(record)

    def budgets(self, records: Sequence[dict]) -> dict[str, int]:
        """``{"<dataset>/<task type>": budget}`` over ``records`` (what ``summary.json`` reports)."""
        out: dict[str, int] = {}
        for record in records:
            meta = record.get("meta") or {}
            out.setdefault(f"{meta.get('dataset', '?')}/{record_task(record)}", self.budget_for(record))
        return out

    def prompt_and_images(self, record: dict) -> tuple[str, list[Image.Image]] | Generation:
        """The record's prompt (:func:`build_prompt`) and images, or a :class:`Generation` with ``error``
        when they do not load."""
        try:
            return build_prompt(record, self.processor), load_record_images(record)
        except (OSError, ValueError) as exc:
            return Generation.failed(exc)

    def _decode(self, row: Sequence[int]) -> Generation:
        """New tokens up to and including the first end-of-turn token, decoded without special tokens."""
        row = list(row)
        end = next((k for k, tok in enumerate(row) if tok in self.eos_ids), None)
        kept = row if end is None else row[: end + 1]
        text = self.processor.tokenizer.decode(kept, skip_special_tokens=True)
        return Generation(text=text, n_new_tokens=len(kept), finished=end is not None)


class BatchGenerator(GeneratorBase):
    """Greedy, batched, left-padded generation with a Qwen-VL model and its processor.

    ``generator(records)`` returns one :class:`Generation` per record, in order. Records are batched by
    token budget (:meth:`budget_for`) and image budget (:meth:`image_budget_for`: ``pixel_plan``'s budget of
    the record's dataset; without a plan, the processor's own limits) in their input order. ``max_new_tokens``
    overrides every record's budget. Unless ``free_decoding``, every answer is held to its task type's pattern
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
        pixel_plan: BudgetPlan | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        eos_ids = end_of_turn_ids(model.generation_config.eos_token_id, processor.tokenizer)
        super().__init__(processor, eos_ids, max_new_tokens, progress, free_decoding, pixel_plan)
        self.model = model
        self.batch_size = batch_size
        self.synced_gpus = synced_gpus
        self.stats = ConstraintStats()

    def __call__(self, records: Sequence[dict]) -> list[Generation]:
        out: list[Generation | None] = [None] * len(records)
        groups: dict[tuple[int, ImageBudget], list[int]] = {}
        for i, record in enumerate(records):
            groups.setdefault((self.budget_for(record), self.image_budget_for(record)), []).append(i)
        with tqdm(total=len(records), desc="generating", unit="rec", disable=not self.progress) as bar:
            for (budget, _), indices in groups.items():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    for i, gen in zip(chunk, self.generate_batch([records[i] for i in chunk], budget)):
                        out[i] = gen
                    bar.update(len(chunk))
        return [g for g in out if g is not None]

    def _inputs(self, records: Sequence[dict]) -> list[tuple[str, list[Image.Image]] | Generation]:
        """Per record, its prompt and images, or a :class:`Generation` with ``error`` when they do not load."""
        return [self.prompt_and_images(record) for record in records]

    def _constraint(self, records: Sequence[dict]) -> Any:
        """A fresh logits processor holding each record to its pattern (fitted to the record's own budget,
        :meth:`budget_for`), ``None`` when none has one."""
        patterns = [self.planner.plan(record).pattern for record in records]
        if all(p is None for p in patterns):
            return None
        stop = tuple(sorted(self.eos_ids))
        cache = grammar_cache(self.processor.tokenizer, model_vocab_size(self.model), stop)
        return cache.logits_processor(patterns, self.stats)

    def _encode(self, items: Sequence[tuple[str, list[Image.Image]]], budget: ImageBudget) -> dict[str, Any]:
        """Left-padded model inputs for ``(prompt, images)`` items, the images resized within ``budget``
        (raises ``ValueError`` for an image the processor refuses, e.g. one more elongated than 200:1)."""
        prompts = [prompt for prompt, _ in items]
        images = [img for _, imgs in items for img in imgs]
        size = image_size_kwargs(budget if images else None)
        with left_padding(self.processor):
            return self.processor(
                text=prompts, images=images or None, padding=True, return_tensors="pt", **size
            )

    def _refused(self, item: tuple[str, list[Image.Image]], budget: ImageBudget) -> Generation | None:
        try:
            self._encode([item], budget)
        except ValueError as exc:
            return Generation.failed(exc)
        return None

    @torch.no_grad()
    def generate_batch(self, records: Sequence[dict], max_new_tokens: int) -> list[Generation]:
        """One padded batch through ``model.generate``. A record whose images do not load, or that the
        processor refuses, gets an error entry; the others are answered. ``max_new_tokens`` should be at
        least each record's :meth:`budget_for` (what :meth:`__call__` passes), or a constrained answer may
        be cut. The records must share one image budget (:meth:`__call__` batches them so)."""
        budgets = {self.image_budget_for(r) for r in records}
        if len(budgets) > 1:
            raise ValueError(f"one batch, several image budgets {sorted(b.describe() for b in budgets)}")
        budget = budgets.pop() if budgets else self.pixel_plan.default
        inputs: list[Any] = self._inputs(records)
        ready = [x for x in inputs if not isinstance(x, Generation)]
        try:
            batch = self._encode(ready, budget) if ready else None
        except ValueError:  # find the record(s) the processor refuses, answer the rest
            inputs = [x if isinstance(x, Generation) else (self._refused(x, budget) or x) for x in inputs]
            ready = [x for x in inputs if not isinstance(x, Generation)]
            batch = self._encode(ready, budget) if ready else None
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


# ---------------------------------------------------------------------------------------------- loading
def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> str:
    """bf16 on a GPU, fp32 on the CPU (bf16 matmuls are slow on most CPUs)."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def processor_plan(processor: Any) -> BudgetPlan:
    """One image budget for every record: the processor's own limits."""
    from qwenvl.model.loading import pixel_budget

    limits = pixel_budget(processor)
    return BudgetPlan.single(ImageBudget(limits.min_pixels, limits.max_pixels))


@dataclass
class LoadedModel:
    """A model and processor ready for :class:`BatchGenerator`, with the image budgets to use (``pixels``:
    the plan and where it came from; the processor holds the plan's global budget)."""

    model: Any
    processor: Any
    pixels: PixelPlan
    device: str
    dtype: str

    @property
    def pixel_plan(self) -> BudgetPlan:
        """The image budget of every dataset (what :class:`BatchGenerator` takes as ``pixel_plan``)."""
        assert self.pixels.plan is not None  # load_for_generation always fills it in
        return self.pixels.plan


def load_generation_processor(
    model_path: str | os.PathLike, min_pixels: int | None = None, max_pixels: int | None = None
) -> tuple[Any, PixelPlan]:
    """The processor saved beside ``model_path``, at the global budget of its image budgets
    (:func:`resolve_pixel_plan`), and those budgets (the processor's own limits where the checkpoint names
    none): what every backend generates with. ``ValueError`` for unusable pixel limits."""
    from qwenvl.model.loading import load_processor

    pixels = resolve_pixel_plan(model_path, min_pixels, max_pixels)
    default = pixels.plan.default if pixels.plan is not None else None
    processor = load_processor(
        model_path,
        min_pixels=default.min_pixels if default else None,
        max_pixels=default.max_pixels if default else None,
    )
    if pixels.plan is None:
        pixels = PixelPlan(processor_plan(processor), pixels.source)
    return processor, pixels


def load_for_generation(
    model_path: str | os.PathLike,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load any checkpoint (class from ``config.model_type``) and the processor saved beside it, with the
    training image budgets (:func:`resolve_pixel_plan`). Raises
    :class:`qwenvl.model.loading.ModelNotFoundError` for a missing folder or an uncached hub id, ``ValueError``
    for unusable pixel limits."""
    from qwenvl.model.loading import load_model

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    processor, pixels = load_generation_processor(model_path, min_pixels, max_pixels)
    model = load_model(model_path, dtype=dtype, attn_implementation=attn_implementation)
    model.to(device).eval()
    return LoadedModel(model, processor, pixels, device, dtype)
