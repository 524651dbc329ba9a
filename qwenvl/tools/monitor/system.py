"""This machine right now: its NVIDIA GPUs through NVML (``pynvml``), CPU load and RAM through psutil.

Independent of the run folder. Nothing raises when a library, driver or GPU is missing: the GPU list is then
empty with a note saying why, and the CPU and RAM fields are None without psutil.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class GpuStat:
    """One GPU as NVML reports it (a field is None when the device does not support it)."""

    index: int
    name: str
    util_percent: float | None
    mem_used_mb: float | None
    mem_total_mb: float | None
    temperature_c: float | None


@dataclass
class SystemStats:
    """This machine right now: GPUs via NVML (empty with ``gpu_note`` saying why), CPU and RAM via psutil."""

    gpus: list[GpuStat]
    gpu_note: str | None
    cpu_percent: float | None
    ram_used_mb: float | None
    ram_total_mb: float | None


def _nvml_field(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - NVMLError_NotSupported and friends: leave the field empty
        return None


def gpu_stats() -> tuple[list[GpuStat], str | None]:
    """Utilisation, memory and temperature of every GPU via NVML; ``([], reason)`` when NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - no driver, no library, no GPU: all mean "no GPU to show"
        return [], f"no NVIDIA GPU visible ({type(e).__name__})"
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = _nvml_field(lambda h=h: pynvml.nvmlDeviceGetName(h))
            name = name.decode() if isinstance(name, bytes) else str(name or "GPU")
            util = _nvml_field(lambda h=h: pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
            mem = _nvml_field(lambda h=h: pynvml.nvmlDeviceGetMemoryInfo(h))
            temp = _nvml_field(lambda h=h: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))
            gpus.append(
                GpuStat(
                    index=i,
                    name=name,
                    util_percent=float(util) if util is not None else None,
                    mem_used_mb=mem.used / 2**20 if mem is not None else None,
                    mem_total_mb=mem.total / 2**20 if mem is not None else None,
                    temperature_c=float(temp) if temp is not None else None,
                )
            )
        return gpus, None if gpus else "NVML reports no GPU"
    finally:
        _nvml_field(pynvml.nvmlShutdown)


def system_stats(cpu_interval: float = 0.1) -> SystemStats:
    """GPUs (NVML), CPU load and RAM (psutil) of the machine the monitor runs on."""
    gpus, note = gpu_stats()
    try:
        import psutil

        cpu = psutil.cpu_percent(interval=cpu_interval)
        vm = psutil.virtual_memory()
        ram_used, ram_total = (vm.total - vm.available) / 2**20, vm.total / 2**20
    except ImportError:
        cpu = ram_used = ram_total = None
    return SystemStats(gpus, note, cpu, ram_used, ram_total)
