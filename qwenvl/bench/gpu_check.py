"""GPU acceptance in one time-boxed call (``bash scripts/gpu_check.sh``; ``--tiny``: the same path on a CPU).

1. The environment: GPU, driver, torch, transformers, DeepSpeed, PEFT and the attention implementations, each
   missing one with how to provide it offline (a wheel folder: ``pip install --no-index --find-links DIR``).
2. Training configurations of :mod:`qwenvl.bench.runner`, each in its own process with its own timeout (an
   out-of-memory or a timeout is recorded and the next one still runs): ``guide`` (ZeRO-3 + CPU offload,
   batch 1 x accumulation 16; skipped with a note when DeepSpeed is not importable), ``packed`` (full
   finetune, no offload), ``lora``, ``packed+lora``; then batched evaluation generation (short answers and a
   long box-list answer).
3. ``gpu_check.json`` and ``gpu_check.md`` in ``--output``, rewritten after every step, so a run cut short
   still leaves what it measured. The whole run keeps within ``--budget_s``.

MFU = 6 x parameters x real tokens/s / peak dense bf16 FLOP/s of the device (2 x ... for generation), the
peaks from :data:`qwenvl.bench.configs.PEAK_BF16_FLOPS`; all parameters count, frozen ones too.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO / "configs" / "qwen3_vl_4b"
ZERO3_OFFLOAD = REPO / "configs" / "zero3_offload.json"
TRAIN_CONFIGS = ("guide", "packed", "lora", "packed+lora")
STEPS = ("environment", *TRAIN_CONFIGS, "generation")
# Share of the remaining budget each step may take (the guide's offloaded optimizer step is the slowest).
SHARES = {"guide": 3.0, "packed": 2.0, "lora": 1.5, "packed+lora": 1.5, "generation": 1.5}
MIN_STEP_S = 20.0
logger = logging.getLogger(__name__)


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
    env["missing"] = {
        name: hint for name, hint in INSTALL_HINTS.items() if name == "deepspeed" and env["deepspeed"] is None
    }
    if usable["flash_attention_2"] is not None:
        env["missing"]["flash_attention_2"] = usable["flash_attention_2"]
    return env


# --------------------------------------------------------------------------------------- one step
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    """Batched greedy generation: a short-answer batch (classification) and a long box-list batch
    (detection, ``min_new_tokens`` = ``max_new_tokens`` so the long answer is really generated)."""
    import torch

    from qwenvl.bench.configs import mfu, peak_bf16_flops
    from qwenvl.bench.runner import BenchOptions, _total_parameters, build_model, load_processor_for
    from qwenvl.eval.generate import build_prompt, load_record_images

    options = BenchOptions(**spec["options"])
    on_gpu = options.device.startswith("cuda")
    converted = Path(os.environ["FLARE25_CONVERTED_DIR"])
    with tempfile.TemporaryDirectory(prefix="qwenvl_gen_") as tmp:
        processor = load_processor_for(options, Path(tmp))
        processor.tokenizer.padding_side = "left"
        model = build_model(options).eval()
        if not on_gpu:
            model = model.to(options.device)
        total = _total_parameters(model)
        peak = peak_bf16_flops(torch.cuda.get_device_name(0)) if on_gpu else None
        results: dict[str, Any] = {"attn_implementation": model.config._attn_implementation, "batches": {}}
        for label, dataset, new_tokens in (
            ("short", "retino_val", spec["short_tokens"]),
            ("long_boxes", "BUSI-det_val", spec["long_tokens"]),
        ):
            records = _records(converted, dataset, spec["batch_size"])
            texts = [build_prompt(r, processor) for r in records]
            images = [load_record_images(r) for r in records]
            inputs = processor(text=texts, images=images, return_tensors="pt", padding=True).to(model.device)
            kwargs = dict(
                max_new_tokens=new_tokens, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id
            )
            if label == "long_boxes":
                kwargs["min_new_tokens"] = new_tokens
            with torch.no_grad():
                model.generate(**inputs, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": None})  # warm-up
                if on_gpu:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                out = model.generate(**inputs, **kwargs)
                if on_gpu:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
            generated = int(
                (out[:, inputs["input_ids"].shape[1] :] != processor.tokenizer.pad_token_id).sum()
            )
            tokens_per_s = generated / seconds if seconds > 0 else 0.0
            results["batches"][label] = {
                "dataset": dataset,
                "batch_size": len(records),
                "prompt_tokens": int(inputs["attention_mask"].sum()),
                "max_new_tokens": new_tokens,
                "generated_tokens": generated,
                "seconds": round(seconds, 4),
                "samples_per_s": round(len(records) / seconds, 3) if seconds > 0 else 0.0,
                "tokens_per_s": round(tokens_per_s, 1),
                "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_gpu else None,
                "mfu": mfu(total, tokens_per_s, peak, factor=2),
            }
    return results


def child_main(spec_path: str, out_path: str) -> int:
    """Run the step described by ``spec_path`` and write ``{"status": ..., ...}`` to ``out_path``."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = _child_generation(spec) if spec["name"] == "generation" else _child_train(spec)
        result = {"status": "ok", **result}
    except Exception as e:  # noqa: BLE001 - recorded, the parent goes on with the next step
        import torch

        oom = isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()
        result = {"status": "oom" if oom else "error", "error": f"{type(e).__name__}: {str(e)[:2000]}"}
        logger.exception("gpu_check step %s failed", spec["name"])
    Path(out_path).write_text(json.dumps(result, indent=2, default=str))
    return 0


def run_step(spec: dict, timeout_s: float, workdir: Path) -> dict:
    """``spec`` in a fresh Python process (own CUDA context, own torch.distributed) killed after
    ``timeout_s``; its result, or ``{"status": "timeout"}``."""
    spec_path, out_path = workdir / f"{spec['slug']}.spec.json", workdir / f"{spec['slug']}.result.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
        }
    )
    log_path = workdir / f"{spec['slug']}.log"
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qwenvl.bench.gpu_check", "--child", str(spec_path), str(out_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    wall = round(time.monotonic() - start, 1)
    if out_path.is_file():
        result = json.loads(out_path.read_text())
    elif wall >= timeout_s:
        result = {"status": "timeout", "error": f"stopped after its {timeout_s:.0f} s share of the budget"}
    else:
        tail = log_path.read_text()[-2000:]
        killed = proc.returncode in (-9, 137)
        result = {"status": "oom" if killed else "error", "error": f"exit {proc.returncode}: {tail}"}
    result["wall_s"] = wall
    result["timeout_s"] = round(timeout_s, 1)
    result["log"] = str(log_path)
    return result


# ------------------------------------------------------------------------------------------ report
def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    from qwenvl.bench.configs import format_duration

    env = report["environment"]
    lines = [
        f"# GPU check ({'tiny, CPU path' if report['tiny'] else 'real 4B architecture, random weights'})",
        "",
        f"Device: {env.get('gpu') or env.get('cpu')} | driver {env.get('driver', '-')} | torch {env['torch']} "
        f"| transformers {env['transformers']} | deepspeed {env['deepspeed'] or 'MISSING'} "
        f"| flash_attn {env['flash_attn'] or 'missing'} | attention chosen: {env['attention_choice']}",
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
    for name in (*TRAIN_CONFIGS, "generation"):
        r = report["steps"].get(name)
        if r is None:
            lines.append(f"| {name} | not run (budget) | | | | | | | | |")
            continue
        if r["status"] != "ok":
            why = (
                (r.get("reason") or r.get("error") or "").splitlines()[0][:160]
                if (r.get("reason") or r.get("error"))
                else ""
            )
            lines.append(f"| {name} | {r['status']}: {why} | | | | | | | | |")
            continue
        if name == "generation":
            for label, b in r["batches"].items():
                lines.append(
                    f"| generation {label} (batch {b['batch_size']}, {b['max_new_tokens']} new) | ok "
                    f"| {r['attn_implementation']} | {_fmt(b['samples_per_s'])} | {_fmt(b['tokens_per_s'], '.0f')} "
                    f"| {_fmt(b['seconds'], '.3f')} | {_fmt(b['peak_memory_mb'], '.0f')} | {_fmt(b['mfu'], '.1%')} | | |"
                )
            continue
        lines.append(
            f"| {name} | ok | {r['attn_implementation']} | {_fmt(r['samples_per_s'])} "
            f"| {_fmt(r['tokens_per_s'], '.0f')} | {_fmt(r['step_time_s'], '.3f')} | {_fmt(r['peak_memory_mb'], '.0f')} "
            f"| {_fmt(r['mfu'], '.1%')} | {format_duration(r['projected_starter_epoch_s'])} "
            f"| {format_duration(r['projected_all19_epoch_s'])} |"
        )
    lines += [
        "",
        "MFU = 6 x parameters x real tokens/s / peak dense bf16 FLOP/s of the device (generation: 2 x ...); every "
        "parameter counts (frozen and LoRA-wrapped too), attention FLOPs and recomputation do not. "
        f"Budget {report['budget_s']} s, used {report['elapsed_s']} s.",
    ]
    return "\n".join(lines) + "\n"


def write_report(report: dict, output: Path) -> None:
    report["elapsed_s"] = (
        round(time.monotonic() - report.pop("_start"), 1) if "_start" in report else report.get("elapsed_s")
    )
    output.mkdir(parents=True, exist_ok=True)
    (output / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (output / "gpu_check.md").write_text(markdown(report))


# -------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="the embedded tiny model on the CPU (same code path)")
    p.add_argument("--output", default="gpu_check", help="folder for gpu_check.json / gpu_check.md")
    p.add_argument("--budget_s", type=float, default=420.0, help="wall-clock budget of all steps together")
    p.add_argument("--model_path", help="a model folder instead of the random 4B architecture / tiny model")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 3; tiny 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    p.add_argument("--only", default=",".join(STEPS[1:]), help="comma-separated steps to run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2], sys.argv[3])
    args = parse_args(argv)
    start = time.monotonic()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output = Path(args.output)
    if not os.environ.get("FLARE25_CONVERTED_DIR"):
        print("error: FLARE25_CONVERTED_DIR must point at converted (demo) data", file=sys.stderr)
        return 2
    import torch

    on_gpu = torch.cuda.is_available() and not args.tiny
    report: dict[str, Any] = {"tiny": args.tiny, "budget_s": args.budget_s, "steps": {}, "_start": start}
    report["environment"] = environment()
    print(json.dumps(report["environment"], indent=2))
    write_report({**report}, output)
    workdir = output / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "steps": args.steps or (2 if args.tiny else 3),
        "warmup": args.warmup,
        "device": "cuda" if on_gpu else "cpu",
        "pipeline_samples": 8,
        "dataloader_workers": 0 if args.tiny else 2,
        "attn_implementation": "auto",
    }
    if args.model_path:
        options["model_path"] = args.model_path
    elif args.tiny:
        from qwenvl.model import build_tiny_model

        options["model_path"] = str(build_tiny_model(workdir / "tiny_model", seed=0))
    else:
        options["random_init"] = str(ARCHITECTURE)
    if args.tiny:  # small packs, small images, short accumulation: the CPU run takes minutes
        options.update(model_max_length=1024, max_pixels=16384, min_pixels=784, pipeline_samples=2)
        if args.steps is None:
            options.update(steps=1, warmup=0)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    todo = [s for s in STEPS[1:] if s in wanted]
    for i, name in enumerate(todo):
        left = args.budget_s - (time.monotonic() - start)
        share = SHARES[name] / sum(SHARES[n] for n in todo[i:])
        timeout = left * share
        spec: dict[str, Any] = {
            "name": name,
            "slug": name.replace("+", "_"),
            "options": options,
            "deepspeed": None,
            # --tiny: accumulation 2 instead of the guide's 16 (same code path, a fraction of the CPU time)
            "grad_accum": 2 if args.tiny and not name.startswith("packed") else None,
        }
        if name == "guide":
            if importlib.util.find_spec("deepspeed") is None:
                report["steps"][name] = {
                    "status": "skipped",
                    "reason": "deepspeed is not importable: the guide's ZeRO-3 + CPU offload cannot run; "
                    "pip install --no-index --find-links WHEEL_DIR deepspeed",
                }
                write_report({**report}, output)
                continue
            spec["deepspeed"] = str(ZERO3_OFFLOAD)
        if name == "generation":
            spec.update(batch_size=8 if on_gpu else 4, short_tokens=16, long_tokens=256 if on_gpu else 48)
        if timeout < MIN_STEP_S:
            report["steps"][name] = {"status": "skipped", "reason": f"budget: {left:.0f} s left"}
            write_report({**report}, output)
            continue
        logger.info("gpu_check: %s (up to %.0f s)", name, timeout)
        report["steps"][name] = run_step(spec, timeout, workdir)
        logger.info("gpu_check: %s -> %s", name, report["steps"][name]["status"])
        write_report({**report}, output)
    write_report(report, output)
    print(markdown(report))
    print(f"Results: {output / 'gpu_check.json'} and {output / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
