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

_RUNNER = ("BenchOptions", "markdown_table", "run_benchmark")


def __getattr__(name: str):
    """The runner's names on first use: importing the package (e.g. for ``python -m qwenvl.bench.gpu_check``,
    whose parent process must stay light) does not import torch."""
    if name in _RUNNER:
        from qwenvl.bench import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
