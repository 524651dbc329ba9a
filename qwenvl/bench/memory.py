"""Memory arithmetic for the GPU decision table: which training strategy fits which GPU.

Mixed-precision training as DeepSpeed and PEFT do it: bf16 weights for compute (2 bytes per parameter),
bf16 gradients (2 bytes per trained parameter), and for every trained parameter an fp32 master copy plus fp32
Adam moments (4 + 4 + 4 = 12 bytes). LoRA adapters and the fully trained modules beside them are kept in
fp32 (4 bytes weight + 4 bytes gradient + 8 bytes Adam). Activations are estimated for one packed row of
``tokens`` tokens with gradient checkpointing (the input of each decoder layer is kept, one layer is
recomputed at a time). All sizes in decimal GB (1e9 bytes). These are projections, not measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from qwenvl.train.lora import LoraSettings, lora_target_names
from qwenvl.train.params import parameter_counts

GB = 1e9


@dataclass(frozen=True)
class ModelSizes:
    """Parameter counts of an architecture, and the width figures the activation estimate needs."""

    total: int
    vision: int
    merger: int
    llm: int
    lora: int  # adapter parameters of the default LoRA placement at ``lora_rank``
    lora_rank: int
    hidden: int
    intermediate: int
    layers: int


def model_sizes(config_dir: str | Path, lora_rank: int = 64) -> ModelSizes:
    """Counts from the architecture in ``config_dir`` built on the meta device (no memory, no weights)."""
    from qwenvl.model import build_random_model

    model = build_random_model(config_dir, dtype=torch.bfloat16, device="meta")
    counts = parameter_counts(model)
    modules = dict(model.named_modules())
    lora = sum(
        lora_rank * (modules[n].in_features + modules[n].out_features)
        for n in lora_target_names(model, LoraSettings(r=lora_rank))
    )
    text = model.config.text_config
    return ModelSizes(
        total=sum(c["total"] for c in counts.values()),
        vision=counts["vision"]["total"],
        merger=counts["merger"]["total"],
        llm=counts["llm"]["total"],
        lora=lora,
        lora_rank=lora_rank,
        hidden=int(text.hidden_size),
        intermediate=int(text.intermediate_size),
        layers=int(text.num_hidden_layers),
    )


def activation_gb(sizes: ModelSizes, tokens: int, checkpointing: bool = True) -> float:
    """Rough bf16 activation memory of one row of ``tokens`` tokens through the LLM (vision tower excluded:
    at most 49 visual tokens per image it is small next to the decoder)."""
    per_layer_full = tokens * (10 * sizes.hidden + 3 * sizes.intermediate) * 2  # attention + MLP tensors
    if checkpointing:
        return (tokens * sizes.hidden * 2 * sizes.layers + per_layer_full) / GB
    return per_layer_full * sizes.layers / GB


def strategy_table(sizes: ModelSizes, tokens: int = 4096, max_live_parameters: int = 10**9) -> list[dict]:
    """One row per strategy: GPU and CPU memory in GB (the guide's trained set: LLM + mergers, vision
    frozen). ``max_live_parameters`` is ZeRO-3's ``stage3_max_live_parameters`` (1e9 in
    configs/zero3_offload.json): the most parameters gathered on the GPU at once."""
    trained = sizes.llm + sizes.merger
    weights = 2 * sizes.total / GB
    act = activation_gb(sizes, tokens)
    lora_state = 16 * (sizes.lora + sizes.merger) / GB  # fp32 weight + grad + Adam m, v
    return [
        {
            "strategy": "full finetune, ZeRO-3 + CPU offload (the guide)",
            "gpu_gb": round(2 * min(max_live_parameters, sizes.total) / GB + act, 1),
            "cpu_gb": round(weights + (2 + 12) * trained / GB, 1),
            "note": "weights fetched from CPU memory for every forward and backward; Adam runs on the CPU",
        },
        {
            "strategy": "full finetune, optimizer offload only (ZeRO-2/3 + offload_optimizer)",
            "gpu_gb": round(weights + 2 * trained / GB + act, 1),
            "cpu_gb": round(12 * trained / GB, 1),
            "note": "weights and gradients on the GPU; fp32 master and Adam on the CPU, once per step",
        },
        {
            "strategy": "full finetune on the GPU (no offload)",
            "gpu_gb": round(weights + (2 + 12) * trained / GB + act, 1),
            "cpu_gb": 0.0,
            "note": "bf16 weights + bf16 grads + fp32 master and Adam moments of every trained parameter",
        },
        {
            "strategy": f"LoRA r={sizes.lora_rank} + mergers, base frozen",
            "gpu_gb": round(weights + lora_state + act, 1),
            "cpu_gb": 0.0,
            "note": "bf16 frozen base; adapters and mergers in fp32 with Adam",
        },
    ]


def fits(gpu_gb: float, capacity_gb: float, headroom: float = 0.9) -> bool:
    """Whether ``gpu_gb`` fits in ``headroom`` of a GPU of ``capacity_gb`` (the CUDA context, allocator
    fragmentation and the vision tower's activations take the rest)."""
    return gpu_gb <= headroom * capacity_gb
