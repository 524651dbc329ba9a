#!/usr/bin/env python
r"""Benchmark training configurations on the same registered data: the guide's (batch 1, padded, accumulation
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

import sys

from qwenvl.bench.cli import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
