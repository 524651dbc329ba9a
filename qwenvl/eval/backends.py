"""The generation backends behind ``--backend``: ``hf`` (transformers ``generate``,
:class:`~qwenvl.eval.generate.BatchGenerator`, the default) and ``vllm`` (:mod:`qwenvl.eval.vllm_backend`, in
its own environment). :func:`load_generator` is the one place evaluation, inference and the submission load a
checkpoint for generation: both backends get the same prompts, image budgets, token budgets and answer
patterns, and return the same :class:`~qwenvl.eval.generate.Generation` items."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qwenvl.eval.vllm_backend import VLLM_BATCH_SIZE

HF = "hf"
VLLM = "vllm"
BACKENDS = (HF, VLLM)
HF_BATCH_SIZE = 8  # records per generate call


def default_batch_size(backend: str) -> int:
    """``--batch_size`` when none is given: records per ``generate`` call (hf), concurrent sequences (vllm)."""
    return VLLM_BATCH_SIZE if backend == VLLM else HF_BATCH_SIZE


def check_backend(backend: str) -> str:
    """``backend`` when it is one of :data:`BACKENDS`, else ``ValueError``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def add_generation_flags(
    parser: argparse.ArgumentParser,
    backend_env: str | None = None,
    batch_size: bool = True,
    backend: bool = True,
) -> None:
    """The flags every command that generates declares alike: ``--backend`` (unless ``backend`` is false;
    default ``$backend_env`` when given and set, else hf), ``--batch_size`` (unless ``batch_size`` is false),
    ``--min_pixels`` / ``--max_pixels``, ``--dtype`` and ``--device``: the :func:`load_generator` arguments of
    the same names."""
    if backend:
        parser.add_argument(
            "--backend",
            default=(os.environ.get(backend_env) if backend_env else None) or HF,
            choices=BACKENDS,
            help="hf: transformers generate; vllm: vLLM, from its own environment (envs/vllm: "
            "docs/evaluation.md, 'Generation backends'), same prompts, budgets, patterns and answers; default "
            + (f"${backend_env}, else hf" if backend_env else "hf"),
        )
    if batch_size:
        parser.add_argument(
            "--batch_size",
            type=int,
            default=None,
            help=f"records per generate call (hf, default {HF_BATCH_SIZE}), or concurrent sequences (vllm, "
            f"default {VLLM_BATCH_SIZE})",
        )
    parser.add_argument(
        "--min_pixels",
        type=int,
        default=None,
        help="one image budget for every record (default: each dataset's training budget, from the checkpoint)",
    )
    parser.add_argument("--max_pixels", type=int, default=None, help="see --min_pixels")
    parser.add_argument(
        "--dtype", default=None, help="bfloat16 | float16 | float32 (default: bf16 on GPU, fp32 on CPU)"
    )
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")


@dataclass
class GenerationSetup:
    """A generator ready for records, with what the summaries report about it."""

    generator: Any  # BatchGenerator | VLLMGenerator
    backend: str
    pixels: Any  # qwenvl.eval.generate.PixelPlan
    device: str
    dtype: str
    batch_size: int

    @property
    def pixel_plan(self) -> Any:
        """The image budget of every dataset (a :class:`~qwenvl.flare.pixels.BudgetPlan`)."""
        return self.pixels.plan

    def info(self, records: Sequence[dict] = ()) -> dict[str, Any]:
        """``backend``, ``device``, ``dtype``, ``batch_size`` and ``pixel_budgets`` (over ``records``)."""
        return {
            "backend": self.backend,
            "device": self.device,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "pixel_budgets": self.pixels.summary(records),
        }


def load_generator(
    model_path: str | os.PathLike,
    backend: str = HF,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    attn_implementation: str | None = None,
    progress: bool = True,
    free_decoding: bool = False,
    engine: Any = None,
) -> GenerationSetup:
    """Load ``model_path`` for generation with ``backend``. ``batch_size``: records per ``generate`` call (hf)
    or concurrent sequences (vllm; default :func:`default_batch_size`); ``engine``: vLLM
    :class:`~qwenvl.eval.vllm_backend.EngineSettings` beyond the batch size (vllm only). Raises
    :class:`qwenvl.model.loading.ModelNotFoundError`, ``ValueError`` for unusable settings and
    ``ImportError`` (with the install command) for ``vllm`` without vLLM. ``progress`` false also switches
    transformers' progress bars off (its weight loading's)."""
    check_backend(backend)
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    batch_size = batch_size or default_batch_size(backend)
    if backend == VLLM:
        from dataclasses import replace

        from qwenvl.eval.vllm_backend import EngineSettings, VLLMGenerator, load_engine

        if attn_implementation:
            raise ValueError(
                "--attn_implementation applies to --backend hf only (vLLM picks its own kernels)"
            )
        settings = replace(engine or EngineSettings(), max_num_seqs=batch_size)
        loaded = load_engine(model_path, min_pixels, max_pixels, dtype, device, settings)
        generator: Any = VLLMGenerator(
            loaded.llm,
            loaded.processor,
            loaded.stop_ids,
            max_new_tokens,
            progress,
            free_decoding=free_decoding,
            pixel_plan=loaded.pixel_plan,
        )
        return GenerationSetup(generator, backend, loaded.pixels, loaded.device, loaded.dtype, batch_size)
    from qwenvl.eval.generate import BatchGenerator, load_for_generation

    hf = load_for_generation(model_path, min_pixels, max_pixels, dtype, device, attn_implementation)
    generator = BatchGenerator(
        hf.model,
        hf.processor,
        batch_size,
        max_new_tokens,
        progress,
        free_decoding=free_decoding,
        pixel_plan=hf.pixel_plan,
    )
    return GenerationSetup(generator, backend, hf.pixels, hf.device, hf.dtype, batch_size)


SHARED_OPTIONS = ("backend", "batch_size", "max_new_tokens", "min_pixels", "max_pixels", "dtype", "device")


def load_generator_for(options: Any, **more: Any) -> GenerationSetup:
    """:func:`load_generator` for a command's options (evaluation's, the submission's, the benchmark's): their
    ``model_path`` and fields named as in :data:`SHARED_OPTIONS` (what :func:`add_generation_flags` and
    ``--max_new_tokens`` set), ``more`` for the rest."""
    return load_generator(options.model_path, **{k: getattr(options, k) for k in SHARED_OPTIONS}, **more)
