"""The command line of ``scripts/benchmark.py`` (also ``flare-benchmark``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from qwenvl.bench import (
    BenchOptions,
    make_config,
    markdown_table,
    parse_config_names,
    run_benchmark,
)
from qwenvl.bench.runner import STARTER_DATASETS
from qwenvl.flare import defaults

DOC = r"""Benchmark training configurations on the same registered data: the guide's (batch 1, padded, accumulation
16) against padding-free packing and LoRA. Writes JSON and a Markdown table beside it, prints the table.

    # CPU, tiny model, demo data (FLARE25_CONVERTED_DIR=demo/converted_data)
    uv run python scripts/benchmark.py --model_path demo/model --configs guide,packed,lora,packed+lora \
        --steps 3 --warmup 1 --output bench/results.json
    # GPU, real 4B architecture with random weights (no download)
    uv run python scripts/benchmark.py --random_init configs/qwen3_vl_4b \
        --configs guide,packed,lora,packed+lora --steps 10 --warmup 2 --dataloader_workers 4 \
        --output bench/h100.json

Projections of a starter epoch (4,418 samples) and of all 19 datasets (52,655) assume the benchmarked data's
length mix; run it on the real converted starter data for real figures.
"""


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--model_path", help="model folder (the tiny demo model on CPU, a real checkpoint on GPU)"
    )
    src.add_argument("--random_init", help="architecture folder, e.g. configs/qwen3_vl_4b (random weights)")
    p.add_argument("--processor_path", help="processor for --random_init (default: the tiny model's)")
    p.add_argument("--configs", default="guide,packed,lora,packed+lora", help="comma-separated names")
    p.add_argument("--datasets", default=STARTER_DATASETS, help="--dataset_use string (default: 5 starters)")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per configuration")
    p.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps before timing")
    p.add_argument(
        "--batch_size", type=int, default=None, help="override: samples (padded) / packs per batch"
    )
    p.add_argument(
        "--grad_accum", type=int, default=None, help="override the accumulation (16 padded, 1 packed)"
    )
    p.add_argument(
        "--packing_max_tokens", type=int, default=None, help="pack budget (default model_max_length)"
    )
    p.add_argument("--model_max_length", type=int, default=defaults.MODEL_MAX_LENGTH)
    p.add_argument(
        "--pixel_policy",
        default="global",
        choices=("global", "per_dataset"),
        help="global (default): every image within --min/--max_pixels, the guide's configuration; "
        "per_dataset: each dataset's budget from the dataset table, as training's default",
    )
    p.add_argument("--max_pixels", type=int, default=defaults.MAX_PIXELS)
    p.add_argument("--min_pixels", type=int, default=defaults.MIN_PIXELS)
    p.add_argument("--gradient_checkpointing", type=_bool, default=True)
    p.add_argument(
        "--attn_implementation",
        default="auto",
        help="auto (flash_attention_2 if installed, else sdpa_packed), sdpa_packed, sdpa, flash_attention_2",
    )
    p.add_argument("--dataloader_workers", type=int, default=0)
    p.add_argument("--pipeline_samples", type=int, default=64, help="samples for the data-pipeline timing")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output", default="benchmark_results.json", help="JSON path; the .md goes beside it")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        names = parse_config_names(args.configs)
        options = BenchOptions(
            model_path=args.model_path,
            random_init=args.random_init,
            processor_path=args.processor_path,
            datasets=args.datasets,
            steps=args.steps,
            warmup=args.warmup,
            model_max_length=args.model_max_length,
            pixel_policy=args.pixel_policy,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
            gradient_checkpointing=args.gradient_checkpointing,
            attn_implementation=args.attn_implementation,
            dataloader_workers=args.dataloader_workers,
            seed=args.seed,
            pipeline_samples=args.pipeline_samples,
        )
        budget = args.packing_max_tokens or args.model_max_length
        configs = [make_config(n, args.batch_size, args.grad_accum, budget) for n in names]
        results = run_benchmark(options, configs)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    results["command"] = " ".join(["scripts/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    table = markdown_table(results)
    out.with_suffix(".md").write_text(f"`{results['command']}`\n\n{table}\n")
    print(table)
    print(f"\nResults: {out} and {out.with_suffix('.md')}")
    return 0
