"""scripts/benchmark.py on a tiny workload: every configuration runs and reports plausible, consistent fields
(never a timing assertion). Plus the configuration presets, projections and memory arithmetic."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

from qwenvl.bench.configs import (
    ALL19_SAMPLES,
    STARTER_SAMPLES,
    format_duration,
    make_config,
    parse_config_names,
    projections,
)
from qwenvl.bench.memory import ModelSizes, activation_gb, fits, model_sizes, strategy_table

REPO = Path(__file__).resolve().parents[1]

FIELDS = (
    "samples_per_s",
    "tokens_per_s",
    "padding_share",
    "peak_memory_mb",
    "steps_per_epoch",
    "projected_starter_epoch_s",
    "projected_all19_epoch_s",
)


def test_presets_and_overrides() -> None:
    guide = make_config("guide")
    assert (guide.packing, guide.lora, guide.batch_size, guide.grad_accum) == (False, False, 1, 16)
    both = make_config("packed+lora", packing_max_tokens=2048)
    assert (both.packing, both.lora, both.grad_accum, both.packing_max_tokens) == (True, True, 1, 2048)
    assert make_config("lora", batch_size=4, grad_accum=2).as_dict()["grad_accum"] == 2
    assert parse_config_names("guide, packed") == ["guide", "packed"]
    with pytest.raises(ValueError, match="unknown fast"):
        parse_config_names("guide,fast")
    with pytest.raises(ValueError, match="twice"):
        parse_config_names("guide,guide")


def test_projections_and_durations() -> None:
    p = projections(samples_per_s=2.0, samples_per_step=16)
    assert p == {
        "projected_starter_epoch_s": 2209.0,
        "projected_all19_epoch_s": 26327.5,
        "projected_starter_steps": 277,
    }
    assert projections(0.0, 16)["projected_starter_epoch_s"] is None
    assert (STARTER_SAMPLES, ALL19_SAMPLES) == (4418, 52655)
    assert [format_duration(x) for x in (None, 42, 95, 5400, 39600)] == [
        "-",
        "42s",
        "1m 35s",
        "1h 30m",
        "11h 00m",
    ]


@pytest.fixture(scope="module")
def sizes_4b() -> ModelSizes:
    """configs/qwen3_vl_4b counted on the meta device by the function the memory tables come from."""
    return model_sizes(REPO / "configs" / "qwen3_vl_4b")


def test_memory_arithmetic_of_the_4b_model(sizes_4b: ModelSizes) -> None:
    sizes = sizes_4b
    assert sizes == ModelSizes(
        total=4_437_815_808,
        vision=306_242_560,
        merger=109_105_152,
        llm=4_022_468_096,
        lora=132_120_576,
        lora_rank=64,
        hidden=2560,
        intermediate=9728,
        layers=36,
    )
    assert sizes.vision + sizes.merger + sizes.llm == sizes.total
    assert round(2 * sizes.total / 1e9, 2) == 8.88  # bf16 weights
    assert round(12 * sizes.total / 1e9, 1) == 53.3  # fp32 master + Adam moments of every parameter
    # Checkpointed activations of a 4096-token row: 36 layer inputs + one layer recomputed.
    assert activation_gb(sizes, 4096) == pytest.approx(
        (4096 * 2560 * 2 * 36 + 4096 * (25600 + 29184) * 2) / 1e9
    )
    offload, optimizer_offload, full, lora = strategy_table(sizes)
    assert offload["strategy"].startswith("full finetune, ZeRO-3 + CPU offload")
    assert offload["gpu_gb"] == 3.2 and offload["cpu_gb"] == 66.7
    assert optimizer_offload["gpu_gb"] == 18.3 and optimizer_offload["cpu_gb"] == 49.6
    assert full["gpu_gb"] == 67.9
    assert lora["gpu_gb"] == 13.9
    assert lora["strategy"] == "LoRA r=64 + mergers, base frozen"
    assert fits(lora["gpu_gb"], 24) and fits(optimizer_offload["gpu_gb"], 24)
    assert not fits(full["gpu_gb"], 48) and fits(full["gpu_gb"], 80)


def test_performance_doc_memory_tables_match_model_sizes(sizes_4b: ModelSizes) -> None:
    """docs/performance.md (linked from the README's memory section) states what model_sizes() and
    strategy_table() compute for configs/qwen3_vl_4b: the parameter counts and every GPU / CPU figure and
    fit of the decision table."""
    doc = (REPO / "docs" / "performance.md").read_text()
    assert f"| {sizes_4b.total:,}: LLM {sizes_4b.llm / 1e9:.2f} B" in doc
    assert f"vision tower {sizes_4b.vision / 1e6:.0f} M, mergers {sizes_4b.merger / 1e6:.0f} M |" in doc
    assert f"| bf16 weights | {2 * sizes_4b.total / 1e9:.1f} GB |" in doc
    assert f"(12 B each) | {12 * sizes_4b.total / 1e9:.1f} GB |" in doc
    assert f"{sizes_4b.lora / 1e6:.0f} M adapter parameters at r={sizes_4b.lora_rank}" in doc
    rows = [line for line in doc.splitlines() if re.match(r"\| (full finetune|LoRA r=)", line)]
    table = strategy_table(sizes_4b)
    assert len(rows) == len(table), rows
    for row, entry in zip(rows, table):
        name, gpu, cpu, *fit = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(re.search(r"[\d.]+", gpu).group()) == entry["gpu_gb"], row
        assert (cpu == "-" and entry["cpu_gb"] == 0.0) or float(cpu.split()[0]) == entry["cpu_gb"], row
        for capacity, cell in zip((24, 40, 80), fit):
            assert cell.startswith("no") == (not fits(entry["gpu_gb"], capacity)), (row, capacity)
    assert rows[-1].startswith(f"| LoRA r={sizes_4b.lora_rank} ")


@pytest.fixture(scope="module")
def bench_script():
    path = Path(__file__).parents[1] / "scripts" / "benchmark.py"
    spec = importlib.util.spec_from_file_location("benchmark_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_every_config(bench_script, tiny_dir, demo_converted, registry_at, tmp_path) -> None:
    registry_at(demo_converted)
    out = tmp_path / "bench" / "results.json"
    argv = [
        "--model_path",
        str(tiny_dir),
        "--configs",
        "guide,packed,lora,packed+lora",
        "--datasets",
        "flare_neojaundice%50,flare_retino%50",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--batch_size",
        "2",
        "--grad_accum",
        "2",
        "--model_max_length",
        "256",
        "--max_pixels",
        "16384",
        "--min_pixels",
        "1024",
        "--gradient_checkpointing",
        "False",
        "--pixel_policy",
        "per_dataset",
        "--pipeline_samples",
        "4",
        "--output",
        str(out),
    ]
    assert bench_script.main(argv) == 0
    results = json.loads(out.read_text())
    assert results["data"]["samples"] == 6
    budgets = results["data"]["pixel_budgets"]  # the dataset table's, as training's default
    assert budgets["policy"] == "per_dataset" and budgets["datasets"]["retino"]["max_tokens"] == 256
    assert budgets["global"]["max_pixels"] == 16384  # the fallback for datasets outside the table
    assert set(results["configs"]) == {"guide", "packed", "lora", "packed+lora"}
    for name, r in results["configs"].items():
        for field in FIELDS:
            assert isinstance(r[field], (int, float)), (name, field)
        assert r["samples_per_s"] > 0 and r["tokens_per_s"] > 50 * r["samples_per_s"]  # ~100 tokens a sample
        rate = r["samples_per_s"]
        assert r["samples_per_s_overall"] == pytest.approx(r["samples"] / r["seconds"], rel=1e-3)
        assert r["projected_starter_epoch_s"] == pytest.approx(STARTER_SAMPLES / rate, rel=1e-3)
        assert r["projected_all19_epoch_s"] == pytest.approx(ALL19_SAMPLES / rate, rel=1e-3)
        assert r["peak_memory_mb"] > 10
    guide, packed = results["configs"]["guide"], results["configs"]["packed"]
    # Padded batches of 2 differently long samples carry padding; packs carry none.
    assert guide["padding_share"] > 0.0 and packed["padding_share"] == 0.0
    assert packed["positions"] == packed["tokens"] and guide["positions"] > guide["tokens"]
    assert guide["samples"] == 4  # one optimizer step: 2 micro-batches of 2 samples
    assert guide["steps_per_epoch"] == math.ceil(math.ceil(6 / 2) / 2) == 2
    assert guide["speedup_vs_guide"] == 1.0
    assert results["configs"]["lora"]["trainable_parameters"] < guide["trainable_parameters"] / 10
    pipeline = results["data_pipeline"]
    assert (
        pipeline["samples"] == 4
        and pipeline["samples_per_s_per_worker"] > 0
        and pipeline["workers_needed"] >= 1
    )
    table = out.with_suffix(".md").read_text()
    assert table.startswith("`scripts/benchmark.py --model_path")
    for name in ("guide", "packed", "lora", "packed+lora"):
        assert f"| {name} |" in table


def test_benchmark_reports_bad_config_names(bench_script, tiny_dir, capsys) -> None:
    assert bench_script.main(["--model_path", str(tiny_dir), "--configs", "guide,turbo"]) == 2
    assert "unknown turbo; choose from guide, packed, lora, packed+lora" in capsys.readouterr().err
