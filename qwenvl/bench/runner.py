"""Run named training configurations on the same registered data and measure them.

Every configuration runs through the training recipe's own steps (:mod:`qwenvl.train.recipe`): the processor
and data loading, :func:`~qwenvl.train.recipe.prepare_model_for_training` on a fresh model with the tune flags
of the guide (LLM + mergers trained, vision tower frozen) or LoRA, the collator and the supervised trainer
(:class:`~qwenvl.train.trainer.QwenVLTrainer` with its packing sampler). Only the model's source is the
benchmark's own: a checkpoint, or random weights of an architecture (``random_init``). ``warmup`` optimizer steps are run untimed, then ``steps``
optimizer steps are timed one by one; samples/s and tokens/s are the medians over those steps (a shared
machine's bursts of load then move them little), ``samples_per_s_overall`` the plain total. The trainer's batch
statistics give the samples, real tokens and processed positions (padding included) of the timed steps.

Memory: on a GPU the peak of ``torch.cuda.max_memory_allocated`` during the configuration; on a CPU the
highest process RSS sampled every 10 ms during the configuration (a process-wide figure: memory freed by an
earlier configuration may still be held by the allocator, so compare CPU figures with care).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from qwenvl.bench.configs import BenchConfig, format_duration, mfu, peak_bf16_flops, projections
from qwenvl.flare import defaults

logger = logging.getLogger(__name__)

STARTER_DATASETS = "flare_neojaundice,flare_retino,flare_busi_det,flare_boneresorption,flare_bone_marrow"


@dataclass
class BenchOptions:
    """What to run and how: the model source, the data, the timing window and the training settings."""

    model_path: str | None = None  # a model folder (tiny model on CPU, a real checkpoint on a GPU)
    random_init: str | None = None  # an architecture folder (configs/qwen3_vl_4b): random weights
    processor_path: str | None = None  # processor for --random_init (default: a freshly built tiny model's)
    datasets: str = STARTER_DATASETS
    steps: int = 5
    warmup: int = 1
    model_max_length: int = defaults.MODEL_MAX_LENGTH
    pixel_policy: str = (
        "global"  # the guide's one budget (min/max_pixels) by default; per_dataset: the table's
    )
    min_pixels: int = defaults.MIN_PIXELS
    max_pixels: int = defaults.MAX_PIXELS
    gradient_checkpointing: bool = True
    attn_implementation: str = (
        "auto"  # flash_attention_2 if installed, else sdpa_packed (qwenvl.model.attention)
    )
    dataloader_workers: int = 0
    learning_rate: float = 1e-5
    lora_r: int = 64
    lora_alpha: int = 128
    seed: int = 42
    pipeline_samples: int = 64
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")

    def __post_init__(self) -> None:
        if (self.model_path is None) == (self.random_init is None):
            raise ValueError("give exactly one of --model_path and --random_init")
        if self.steps < 1 or self.warmup < 0:
            raise ValueError(f"--steps {self.steps} must be >= 1 and --warmup {self.warmup} >= 0")


# ----------------------------------------------------------------------------------------- measuring
class _RssSampler:
    """Highest RSS of this process, sampled every ``interval`` seconds in a background thread."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self._process = psutil.Process()
        self.interval = interval
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


class _StepTimer(TrainerCallback):
    """Wall time and batch statistics at the end of the warm-up and of every timed optimizer step."""

    def __init__(self, trainer: Any, warmup: int, steps: int, synchronize: Callable[[], None]) -> None:
        self.trainer, self.warmup, self.end = trainer, warmup, warmup + steps
        self.synchronize = synchronize
        self.marks: list[tuple[float, dict[str, int]]] = []

    def _mark(self) -> None:
        self.synchronize()
        self.marks.append((time.perf_counter(), dict(self.trainer.batch_stats)))

    def on_train_begin(self, args, state, control, **kwargs):
        if self.warmup == 0:
            self._mark()

    def on_step_end(self, args, state, control, **kwargs):
        if self.warmup <= state.global_step <= self.end:
            self._mark()

    def window(self) -> tuple[float, dict[str, int]]:
        """Seconds and statistics of all timed steps together."""
        (t0, s0), (t1, s1) = self.marks[0], self.marks[-1]
        return t1 - t0, {k: s1[k] - s0[k] for k in s1}

    def median_rates(self) -> tuple[float, float]:
        """Median over the timed steps of (samples/s, real tokens/s): robust to another process taking the
        CPU or GPU for part of the run."""
        samples, tokens = [], []
        for (t0, s0), (t1, s1) in zip(self.marks, self.marks[1:]):
            dt = max(t1 - t0, 1e-9)
            samples.append((s1["num_samples"] - s0["num_samples"]) / dt)
            tokens.append((s1["num_tokens"] - s0["num_tokens"]) / dt)
        return statistics.median(samples), statistics.median(tokens)


def _synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


# ------------------------------------------------------------------------------------------- loading
def load_processor_for(options: BenchOptions, workdir: Path) -> Any:
    """The processor of ``model_path``, or for ``random_init`` the one of ``processor_path`` (default: a tiny
    model built into ``workdir``: same tokenizer, chat template and image processor as the real model)."""
    from qwenvl.model import build_tiny_model
    from qwenvl.train.recipe import load_training_processor

    path = options.model_path or options.processor_path
    if path is None:
        path = build_tiny_model(workdir / "processor_source", seed=0)
    return load_training_processor(path, options.min_pixels, options.max_pixels)


def image_plan(options: BenchOptions) -> Any:
    """The image budgets the benchmark's data gets: ``pixel_policy`` over its datasets, with
    ``min_pixels`` / ``max_pixels`` as the global budget (:func:`qwenvl.data.plan_image_budgets`)."""
    from qwenvl.data import plan_image_budgets

    return plan_image_budgets(options.datasets, options.pixel_policy, options.min_pixels, options.max_pixels)


def build_model(options: BenchOptions) -> torch.nn.Module:
    """A fresh model, not yet prepared for training: the folder's weights, or random weights of the
    ``random_init`` architecture. The benchmark's own precision for every configuration: bf16 weights on a
    GPU, fp32 on a CPU."""
    from qwenvl.model import build_random_model, load_model

    on_gpu = options.device.startswith("cuda")
    dtype = torch.bfloat16 if on_gpu else torch.float32
    if options.random_init:
        return build_random_model(
            options.random_init,
            dtype=dtype,
            device=options.device,
            attn_implementation=options.attn_implementation,
        )
    return load_model(options.model_path, dtype=dtype, attn_implementation=options.attn_implementation)


# ------------------------------------------------------------------------------------------ one config
def _training_args(options: BenchOptions, config: BenchConfig, output_dir: Path) -> Any:
    from qwenvl.train.arguments import TrainingArguments

    on_gpu = options.device.startswith("cuda")
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        max_steps=options.warmup + options.steps,
        learning_rate=options.learning_rate,
        weight_decay=0.01,
        warmup_ratio=0.03,
        lr_scheduler_type="cosine",
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=options.gradient_checkpointing,
        save_strategy="no",
        report_to="none",
        logging_steps=10**9,
        disable_tqdm=True,
        dataloader_num_workers=options.dataloader_workers,
        dataloader_pin_memory=on_gpu,
        seed=options.seed,
        data_seed=options.seed,
        use_cpu=not on_gpu,
        deepspeed=config.deepspeed,
    )


def steps_per_epoch(config: BenchConfig, lengths: list[int], world_size: int = 1) -> int:
    """Optimizer steps in one epoch of ``lengths`` under ``config``."""
    from qwenvl.data.packing import PackedBatchSampler

    if config.packing:
        batches = len(
            PackedBatchSampler(
                lengths, config.packing_max_tokens, packs_per_batch=config.batch_size, num_replicas=world_size
            )
        )
    else:
        batches = math.ceil(len(lengths) / (config.batch_size * world_size))
    return math.ceil(batches / config.grad_accum)


def run_config(
    options: BenchOptions, config: BenchConfig, dataset: Any, processor: Any, workdir: Path
) -> dict:
    """Train ``config`` for ``warmup + steps`` optimizer steps on ``dataset`` and return its measurements."""
    import transformers

    from qwenvl.train.lora import LoraSettings
    from qwenvl.train.recipe import build_collator, build_sft_trainer, prepare_model_for_training

    on_gpu = options.device.startswith("cuda")
    transformers.set_seed(options.seed)
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with _RssSampler() as rss:
        model = prepare_model_for_training(
            build_model(options),
            tune_vision=False,
            tune_merger=True,
            tune_llm=not config.lora,
            lora=LoraSettings(r=options.lora_r, alpha=options.lora_alpha) if config.lora else None,
            gradient_checkpointing=options.gradient_checkpointing,
        )
        args = _training_args(options, config, workdir / config.name.replace("+", "_"))
        collator = build_collator(processor.tokenizer.pad_token_id, packing=config.packing)
        trainer = build_sft_trainer(
            model,
            args,
            processor,
            dataset,
            collator,
            packing_max_tokens=config.packing_max_tokens if config.packing else None,
        )
        timer = _StepTimer(trainer, options.warmup, options.steps, _synchronizer(options.device))
        trainer.add_callback(timer)
        trainer.train()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        attention = getattr(model.config, "_attn_implementation", None)
        total_parameters = _total_parameters(model)
    seconds, stats = timer.window()
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if on_gpu else rss.peak / 2**20
    del trainer, model
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    samples, tokens, positions = stats["num_samples"], stats["num_tokens"], stats["num_positions"]
    samples_per_s, tokens_per_s = timer.median_rates()
    samples_per_step = samples / options.steps
    result = {
        "settings": config.as_dict(),
        "timed_steps": options.steps,
        "seconds": round(seconds, 6),
        "samples": samples,
        "tokens": tokens,
        "positions": positions,
        "samples_per_s": round(samples_per_s, 4),  # median over the timed steps
        "tokens_per_s": round(tokens_per_s, 1),
        "samples_per_s_overall": round(samples / seconds, 3) if seconds > 0 else 0.0,
        "padding_share": round(1.0 - tokens / positions, 4) if positions else 0.0,
        "samples_per_step": round(samples_per_step, 2),
        "steps_per_epoch": steps_per_epoch(config, list(dataset.lengths)),
        "peak_memory_mb": round(peak_mb, 1),
        "memory_kind": "cuda_max_memory_allocated" if on_gpu else "process_rss_peak",
        "trainable_parameters": trainable,
        "total_parameters": total_parameters,
        "step_time_s": round(seconds / options.steps, 4),
        "attn_implementation": attention,
        "deepspeed": config.deepspeed,
    }
    peak = peak_bf16_flops(torch.cuda.get_device_name(0)) if on_gpu else None
    result["mfu"] = mfu(total_parameters, tokens_per_s, peak)
    result["peak_bf16_flops"] = peak
    result.update(projections(samples_per_s, samples_per_step))
    return result


def _total_parameters(model: torch.nn.Module) -> int:
    """Every parameter, also under ZeRO-3 (whose partitioned parameters report 0 elements but keep ds_numel)."""
    return sum(int(getattr(p, "ds_numel", 0) or p.numel()) for p in model.parameters())


# ------------------------------------------------------------------------------------- data pipeline
def measure_pipeline(dataset: Any, pad_token_id: int, samples: int) -> dict:
    """Samples/s of one data worker: load images, encode, collate (padded batches of 1), in this process."""
    from qwenvl.train.recipe import build_collator

    n = min(samples, len(dataset))
    collate = build_collator(pad_token_id, packing=False)
    dataset[0]  # warm caches (tokenizer, processor)
    start = time.perf_counter()
    for i in range(n):
        collate([dataset[i]])
    seconds = time.perf_counter() - start
    return {
        "samples": n,
        "seconds": round(seconds, 6),
        "samples_per_s_per_worker": round(n / seconds, 2) if seconds > 0 else 0.0,
    }


# ------------------------------------------------------------------------------------------- the run
def device_description(device: str) -> str:
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}, {os.cpu_count()} cores), torch {torch.__version__}"


def run_benchmark(options: BenchOptions, configs: list[BenchConfig], workdir: Path | None = None) -> dict:
    """Measure every configuration on the same data; the results dict that ``benchmark.py`` writes."""
    from qwenvl.train.recipe import load_training_datasets

    with tempfile.TemporaryDirectory(prefix="qwenvl_bench_") as tmp:
        workdir = Path(workdir or tmp)
        processor = load_processor_for(options, workdir)
        plan = image_plan(options)
        dataset, _ = load_training_datasets(
            processor, options.datasets, options.model_max_length, options.seed, pixel_plan=plan
        )
        if len(dataset) == 0:
            raise ValueError(f"no sample of {options.datasets} passed the checks; see the report above")
        lengths = list(dataset.lengths)
        results: dict[str, Any] = {
            "device": device_description(options.device),
            "model": options.model_path or f"random init of {options.random_init}",
            "data": {
                "datasets": options.datasets,
                "pixel_budgets": plan.as_record(),
                "samples": len(dataset),
                "tokens": sum(lengths),
                "mean_sample_tokens": round(sum(lengths) / len(lengths), 1),
                "max_sample_tokens": max(lengths),
            },
            "options": {k: v for k, v in vars(options).items()},
            "configs": {},
        }
        for config in configs:
            logger.info("benchmark: %s %s", config.name, config.as_dict())
            results["configs"][config.name] = run_config(options, config, dataset, processor, workdir)
        pipeline = measure_pipeline(dataset, processor.tokenizer.pad_token_id, options.pipeline_samples)
        fastest = max((c["samples_per_s"] for c in results["configs"].values()), default=0.0)
        per_worker = pipeline["samples_per_s_per_worker"]
        pipeline["fastest_config_samples_per_s"] = fastest
        pipeline["workers_needed"] = math.ceil(fastest / per_worker) if per_worker else None
        results["data_pipeline"] = pipeline
        add_ratios(results)
        return results


def add_ratios(results: dict) -> None:
    """Each configuration's speed and projected epoch relative to ``guide`` (when it was run)."""
    guide = results["configs"].get("guide")
    if not guide or not guide["samples_per_s"]:
        return
    for res in results["configs"].values():
        res["speedup_vs_guide"] = round(res["samples_per_s"] / guide["samples_per_s"], 2)
        res["tokens_per_s_vs_guide"] = round(res["tokens_per_s"] / guide["tokens_per_s"], 2)


def markdown_table(results: dict) -> str:
    """The results as a Markdown table (one row per configuration) plus the data-pipeline line."""
    head = (
        "| config | batch x accum | samples/s | real tokens/s | padding | steps/epoch | peak memory (MB) "
        "| starter epoch (4,418) | all 19 (52,655) | vs guide |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [head]
    for name, r in results["configs"].items():
        s = r["settings"]
        unit = "pack" if s["packing"] else "sample"
        rows.append(
            f"| {name} | {s['batch_size']} {unit}{'s' if s['batch_size'] > 1 else ''} x {s['grad_accum']} "
            f"| {r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | {r['padding_share']:.1%} "
            f"| {r['steps_per_epoch']} | {r['peak_memory_mb']:.0f} "
            f"| {format_duration(r['projected_starter_epoch_s'])} "
            f"| {format_duration(r['projected_all19_epoch_s'])} "
            f"| {'x' + format(r['speedup_vs_guide'], '.2f') if 'speedup_vs_guide' in r else '-'} |"
        )
    p = results["data_pipeline"]
    data = results["data"]
    rows.append("")
    rows.append(
        f"Data: {data['datasets']} ({data['samples']} samples, "
        f"{data['mean_sample_tokens']} tokens on average). "
        f"Device: {results['device']}. Model: {results['model']}."
    )
    rows.append(
        f"Data pipeline: {p['samples_per_s_per_worker']:.1f} samples/s per worker (images decoded, encoded, "
        f"collated); the fastest configuration needs {p['fastest_config_samples_per_s']:.1f} samples/s, i.e. "
        f"{p['workers_needed']} worker(s)."
    )
    return "\n".join(rows)
