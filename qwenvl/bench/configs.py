"""Named training configurations the benchmark compares, and the projections it derives from a measurement.

``guide`` is the user's guide as written (batch 1, padded, accumulation 16, full finetune of LLM + mergers);
``packed`` packs whole samples into ``packing_max_tokens`` rows (no padding, one pack per micro-batch);
``lora`` and ``packed+lora`` replace the LLM's full finetune by LoRA adapters (mergers still fully trained).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

STARTER_SAMPLES = 4418  # the guide's five starter datasets
ALL19_SAMPLES = 52655  # all 19 FLARE25 2D datasets (training splits)
GUIDE_GRAD_ACCUM = 16
CONFIG_NAMES = ("guide", "packed", "lora", "packed+lora")


@dataclass(frozen=True)
class BenchConfig:
    """One training configuration: how batches are built and what trains."""

    name: str
    packing: bool = False
    lora: bool = False
    batch_size: int = 1  # samples per micro-batch (padded) or packs per micro-batch (packed)
    grad_accum: int = GUIDE_GRAD_ACCUM
    packing_max_tokens: int = 4096
    deepspeed: str | None = (
        None  # a DeepSpeed JSON (the guide's: configs/zero3_offload.json); None: plain torch
    )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_config(
    name: str,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    packing_max_tokens: int = 4096,
    deepspeed: str | None = None,
) -> BenchConfig:
    """The preset ``name`` (one of :data:`CONFIG_NAMES`). ``batch_size`` and ``grad_accum`` override the
    preset's (padded: batch 1 x 16 as the guide; packed: 1 pack x 1, since a pack of 4096 tokens already
    holds about 20 of the guide's ~200-token samples, more than its effective batch of 16)."""
    if name not in CONFIG_NAMES:
        raise ValueError(f"unknown benchmark configuration {name!r}; choose from {', '.join(CONFIG_NAMES)}")
    packing = name.startswith("packed")
    config = BenchConfig(
        name=name,
        packing=packing,
        lora=name.endswith("lora"),
        grad_accum=1 if packing else GUIDE_GRAD_ACCUM,
        packing_max_tokens=packing_max_tokens,
        deepspeed=deepspeed,
    )
    if batch_size is not None:
        config = replace(config, batch_size=int(batch_size))
    if grad_accum is not None:
        config = replace(config, grad_accum=int(grad_accum))
    return config


def parse_config_names(spec: str) -> list[str]:
    """``"guide,packed"`` -> ``["guide", "packed"]``; ``ValueError`` naming an unknown or repeated name."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in CONFIG_NAMES]
    if unknown or not names:
        raise ValueError(
            f"--configs {spec!r}: unknown {', '.join(unknown) or '(empty)'}; "
            f"choose from {', '.join(CONFIG_NAMES)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--configs {spec!r} names a configuration twice")
    return names


def projections(samples_per_s: float, samples_per_step: float) -> dict[str, float | int | None]:
    """Time and optimizer steps of one epoch of the starter set and of all 19 datasets, assuming their
    samples have the length mix of the benchmarked data."""
    if samples_per_s <= 0:
        return {
            "projected_starter_epoch_s": None,
            "projected_all19_epoch_s": None,
            "projected_starter_steps": None,
        }
    return {
        "projected_starter_epoch_s": round(STARTER_SAMPLES / samples_per_s, 1),
        "projected_all19_epoch_s": round(ALL19_SAMPLES / samples_per_s, 1),
        "projected_starter_steps": math.ceil(STARTER_SAMPLES / samples_per_step)
        if samples_per_step
        else None,
    }


def format_duration(seconds: float | None) -> str:
    """``5400`` -> ``"1h 30m"``, ``95`` -> ``"1m 35s"``, ``None`` -> ``"-"``."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


# Peak dense bf16 tensor FLOP/s (no sparsity) by device-name fragment, first match wins; for the MFU estimate.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM / NVL
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("A6000", 155e12),
    ("RTX 4090", 165e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("L4", 121e12),
)


def peak_bf16_flops(device_name: str) -> float | None:
    """The table's peak for ``device_name`` (``torch.cuda.get_device_name()``); None when unknown or a CPU."""
    for fragment, flops in PEAK_BF16_FLOPS:
        if fragment.lower() in device_name.lower():
            return flops
    return None


def mfu(parameters: int, tokens_per_s: float, peak_flops: float | None, factor: int = 6) -> float | None:
    """Model FLOPs utilisation: ``factor x parameters x tokens/s / peak`` (6: forward + backward of training,
    2: forward only, e.g. generation). Counts every parameter (frozen and LoRA-wrapped ones too) and no
    attention FLOPs, recomputation or vision-tower resolution: an estimate, comparable between runs."""
    if not peak_flops or tokens_per_s <= 0:
        return None
    return round(factor * parameters * tokens_per_s / peak_flops, 4)
