"""Benchmark the guide's training configuration against packing and LoRA on the same data, and the one-call GPU
check (scripts/gpu_check.sh)."""

from qwenvl.bench.configs import (
    ALL19_SAMPLES,
    CONFIG_NAMES,
    STARTER_SAMPLES,
    BenchConfig,
    format_duration,
    make_config,
    parse_config_names,
    projections,
)
from qwenvl.bench.runner import BenchOptions, markdown_table, run_benchmark

__all__ = [
    "ALL19_SAMPLES",
    "CONFIG_NAMES",
    "STARTER_SAMPLES",
    "BenchConfig",
    "BenchOptions",
    "format_duration",
    "make_config",
    "markdown_table",
    "parse_config_names",
    "projections",
    "run_benchmark",
]
