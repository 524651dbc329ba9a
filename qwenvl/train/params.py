"""Which parameters train, and at which learning rate.

Qwen3-VL's parameters fall into three groups, decided by name (so wrappers such as PEFT or DeepSpeed that
prefix names do not matter):

- ``vision``: the vision tower (``visual.patch_embed``, ``visual.pos_embed``, ``visual.blocks``),
- ``merger``: the vision-language mergers (``visual.merger`` and ``visual.deepstack_merger_list``),
- ``llm``: everything else: embeddings, decoder layers, final norm, ``lm_head`` (tied to the embeddings).

Freeze flags set ``requires_grad`` on the parameters themselves (setting attributes on modules does nothing).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

VISION, MERGER, LLM = "vision", "merger", "llm"
GROUPS = (VISION, MERGER, LLM)


def parameter_group(name: str) -> str:
    """The group of a parameter name (``model.visual.blocks.0.attn.qkv.weight`` -> ``vision``)."""
    if ".visual." in f".{name}":
        if ".merger." in name or ".deepstack_merger_list." in name:
            return MERGER
        return VISION
    return LLM


def apply_freeze(model: torch.nn.Module, tune_vision: bool, tune_merger: bool, tune_llm: bool) -> None:
    """Set ``requires_grad`` per parameter from the three tune flags. Tied weights (``lm_head`` and the input
    embeddings share one tensor) follow the LLM flag."""
    wanted = {VISION: tune_vision, MERGER: tune_merger, LLM: tune_llm}
    for name, param in model.named_parameters():
        param.requires_grad_(wanted[parameter_group(name)])


def _numel(param: torch.nn.Parameter) -> int:
    # Under ZeRO-3 a parameter is a placeholder whose full size is in ds_numel.
    return int(getattr(param, "ds_numel", param.numel()))


def parameter_counts(model: torch.nn.Module) -> OrderedDict[str, dict[str, int]]:
    """``{group: {"total": n, "trainable": n}}``; shared (tied) tensors are counted once."""
    counts = OrderedDict((g, {"total": 0, "trainable": 0}) for g in GROUPS)
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if (
            id(param) in seen or ".original_module." in name
        ):  # PEFT keeps a frozen copy of fully trained modules
            continue
        seen.add(id(param))
        group = counts[parameter_group(name)]
        group["total"] += _numel(param)
        group["trainable"] += _numel(param) if param.requires_grad else 0
    return counts


def parameter_table(model: torch.nn.Module, lrs: dict[str, float] | None = None) -> str:
    """A plain-text table of parameters per group (for the log)."""
    counts = parameter_counts(model)
    rows = [f"{'group':<8} {'parameters':>15} {'trainable':>15} {'lr':>10}"]
    for group, c in counts.items():
        lr = "-" if not c["trainable"] or lrs is None else f"{lrs[group]:.2e}"
        rows.append(f"{group:<8} {c['total']:>15,} {c['trainable']:>15,} {lr:>10}")
    total = sum(c["total"] for c in counts.values())
    trainable = sum(c["trainable"] for c in counts.values())
    rows.append(f"{'total':<8} {total:>15,} {trainable:>15,} {'':>10}")
    return "\n".join(rows)


def group_learning_rates(
    base_lr: float, vision_lr: float | None, merger_lr: float | None
) -> dict[str, float]:
    return {VISION: vision_lr or base_lr, MERGER: merger_lr or base_lr, LLM: base_lr}


def optimizer_param_groups(
    model: torch.nn.Module, lrs: dict[str, float], weight_decay: float, decay_names: set[str]
) -> list[dict]:
    """Optimizer groups: one per (model group, decay or not) that has trainable parameters. Each carries its
    own ``lr`` and a ``name`` so schedules and logs can be checked per group."""
    buckets: OrderedDict[tuple[str, bool], list] = OrderedDict()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (parameter_group(name), name in decay_names)
        buckets.setdefault(key, []).append(param)
    return [
        {
            "name": f"{group}{'' if decay else '_no_decay'}",
            "params": params,
            "lr": lrs[group],
            "weight_decay": weight_decay if decay else 0.0,
        }
        for (group, decay), params in buckets.items()
    ]
