"""LoRA finetuning through PEFT, and merging an adapter back into a full checkpoint.

What trains under ``--lora_enable``:

- the language model through adapters on its linear layers (``--lora_target_modules``, by default
  q/k/v/o/gate/up/down_proj of every decoder layer; ``--tune_mm_llm False`` leaves the LLM without adapters);
  its base weights, embeddings, norms and ``lm_head`` stay frozen;
- with ``--lora_vision``, adapters on every linear layer of the vision blocks as well;
- the groups the tune flags enable besides (``--tune_mm_mlp``: the mergers, ``--tune_mm_vision``: the vision
  tower) train fully. They are PEFT ``modules_to_save``, so the adapter checkpoint carries them and
  :func:`merge_adapter` restores them; their trainable copies are kept in float32 so that small updates are
  not lost to bf16 rounding.

Parameter names keep the model's own path under PEFT's ``base_model.model.`` prefix, so the freeze groups and
per-group learning rates of :mod:`qwenvl.train.params` (matched by name substring) apply unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qwenvl.compat import quiet_checkpointing_reads
from qwenvl.flare.runfiles import RUN_INFO
from qwenvl.train.params import LLM, MERGER, VISION, parameter_group

logger = logging.getLogger(__name__)

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_CONFIG = "adapter_config.json"
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@dataclass(frozen=True)
class LoraSettings:
    """Adapter shape and placement."""

    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    targets: tuple[str, ...] = DEFAULT_TARGETS
    llm: bool = True  # adapters on the language model's ``targets``
    vision: bool = False  # adapters on every linear layer of the vision blocks

    @classmethod
    def from_args(cls, args: Any, tune_llm: bool = True) -> LoraSettings:
        """From :class:`~qwenvl.train.arguments.LoraArguments` (``lora_r``, ``lora_alpha``, ``lora_dropout``,
        ``lora_target_modules``, ``lora_vision``) and the ``--tune_mm_llm`` flag."""
        targets = tuple(t.strip() for t in str(args.lora_target_modules).split(",") if t.strip())
        return cls(
            r=int(args.lora_r),
            alpha=int(args.lora_alpha),
            dropout=float(args.lora_dropout),
            targets=targets,
            llm=bool(tune_llm),
            vision=bool(args.lora_vision),
        )


def _linear_names(model: torch.nn.Module) -> list[tuple[str, str]]:
    """``(name, group)`` of every ``nn.Linear`` of the model."""
    return [
        (name, parameter_group(name + ".weight"))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    ]


def lora_target_names(model: torch.nn.Module, settings: LoraSettings) -> list[str]:
    """Full names of the linear layers that get adapters. ``ValueError`` for a target name that matches no
    linear layer of the language model (with the names that exist)."""
    linears = _linear_names(model)
    chosen: list[str] = []
    if settings.llm:
        llm = [n for n, g in linears if g == LLM and n.rsplit(".", 1)[-1] != "lm_head"]
        leaves = {n.rsplit(".", 1)[-1] for n in llm}
        unknown = [t for t in settings.targets if t not in leaves]
        if unknown:
            raise ValueError(
                f"--lora_target_modules {','.join(unknown)}: no such linear layer in the language model; "
                f"it has {', '.join(sorted(leaves))}"
            )
        chosen += [n for n in llm if n.rsplit(".", 1)[-1] in settings.targets]
    if settings.vision:
        chosen += [n for n, g in linears if g == VISION and ".blocks." in n]
    return chosen


def names_regex(names: Iterable[str]) -> str:
    """A compact regular expression that full-matches exactly ``names`` (layer numbers become ``\\d+`` where
    that selects no other name of ``names``' shape); PEFT reads a string ``target_modules`` as such."""
    names = sorted(set(names))
    patterns = sorted({re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(n)) for n in names})
    return "(?:" + "|".join(patterns) + ")"


def _targets_for_peft(model: torch.nn.Module, names: list[str]) -> str | list[str]:
    """The regex of ``names`` when it selects exactly them among the model's modules, else the plain list."""
    regex = names_regex(names)
    matched = {n for n, _ in model.named_modules() if re.fullmatch(regex, n)}
    return regex if matched == set(names) else list(names)


def full_train_modules(model: torch.nn.Module, tune_vision: bool, tune_merger: bool) -> list[str]:
    """Names of the vision-side modules that train fully next to the adapters (PEFT ``modules_to_save``):
    the mergers with ``tune_merger``, the patch embedding, position embedding and each block with
    ``tune_vision``. Module lists are expanded to their elements (PEFT wraps modules, not lists)."""
    wanted = {VISION: tune_vision, MERGER: tune_merger}
    out: list[str] = []
    for name, module in model.named_modules():
        if not name.endswith(".visual") and name != "visual":
            continue
        for child_name, child in module.named_children():
            children = (
                [(f"{child_name}.{k}", c) for k, c in enumerate(child)]
                if isinstance(child, torch.nn.ModuleList)
                else [(child_name, child)]
            )
            for sub, mod in children:
                full = f"{name}.{sub}"
                if any(True for _ in mod.parameters()) and wanted[parameter_group(full + ".x")]:
                    out.append(full)
    return out


def upcast_trainable(model: torch.nn.Module) -> int:
    """Cast trainable half-precision parameters to float32 (optimizer updates of ~1e-5 would vanish in bf16);
    returns how many were cast. Mixed precision (``--bf16``) still computes in bf16."""
    n = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()
            n += 1
    return n


def apply_lora(
    model: torch.nn.Module, settings: LoraSettings, tune_vision: bool = False, tune_merger: bool = True
) -> torch.nn.Module:
    """Wrap ``model`` in a PEFT LoRA model: adapters on :func:`lora_target_names`, the modules of
    :func:`full_train_modules` trained fully, everything else frozen."""
    from peft import LoraConfig, get_peft_model

    names = lora_target_names(model, settings)
    if not names:
        raise ValueError(
            "LoRA has no layer to adapt: enable --tune_mm_llm True (language model adapters) or --lora_vision"
        )
    to_save = full_train_modules(model, tune_vision, tune_merger)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=_targets_for_peft(model, names),
        modules_to_save=to_save or None,
        bias="none",
    )
    with quiet_checkpointing_reads():  # PEFT reads a property transformers 5.2x deprecates
        peft_model = get_peft_model(model, config)
    upcast_trainable(peft_model)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    logger.info(
        "LoRA r=%d alpha=%d dropout=%.3g on %d linear layers; trained fully besides: %s; %s trainable",
        settings.r,
        settings.alpha,
        settings.dropout,
        len(names),
        ", ".join(to_save) if to_save else "nothing",
        f"{trainable:,}",
    )
    return peft_model


# ------------------------------------------------------------------------------------------------ merge
def adapter_base_model(adapter_dir: str | Path) -> str:
    """The base model an adapter checkpoint was trained on: ``base_model_name_or_path`` of its
    ``adapter_config.json``, else ``base_model`` of its ``run_info.json``."""
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / ADAPTER_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{adapter_dir} has no {ADAPTER_CONFIG}: it is not a LoRA checkpoint (a full checkpoint needs no "
            "merging; pass a checkpoint-N folder of a --lora_enable run)"
        )
    base = json.loads(config_path.read_text()).get("base_model_name_or_path")
    run_info = adapter_dir / RUN_INFO
    if not base and run_info.is_file():
        base = json.loads(run_info.read_text()).get("base_model")
    if not base:
        raise ValueError(
            f"{config_path} names no base model and there is no {RUN_INFO} beside it: pass --base_model"
        )
    return str(base)


def merge_adapter(
    adapter_dir: str | Path,
    output_dir: str | Path,
    base_model: str | Path | None = None,
    dtype: str = "auto",
) -> Path:
    """Merge a LoRA checkpoint into its base model and save a full checkpoint (weights, processor,
    ``run_info.json``) that ``AutoModelForImageTextToText`` / ``AutoProcessor`` load without PEFT."""
    from peft import PeftModel

    from qwenvl.model import load_model, load_processor

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    base = str(base_model) if base_model else adapter_base_model(adapter_dir)
    model = load_model(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    output_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(output_dir)
    has_processor = any((adapter_dir / f).is_file() for f in PROCESSOR_FILES)
    load_processor(adapter_dir if has_processor else base).save_pretrained(output_dir)
    info = json.loads((adapter_dir / RUN_INFO).read_text()) if (adapter_dir / RUN_INFO).is_file() else {}
    info["merged_lora"] = {"adapter_dir": str(adapter_dir.resolve()), "base_model": base, "dtype": dtype}
    (output_dir / RUN_INFO).write_text(json.dumps(info, indent=2, default=str))
    for extra in ("chat_template.jinja",):
        if (adapter_dir / extra).is_file() and not (output_dir / extra).is_file():
            shutil.copy2(adapter_dir / extra, output_dir / extra)
    logger.info("Merged %s into %s -> %s", adapter_dir, base, output_dir)
    return output_dir


__all__ = [
    "DEFAULT_TARGETS",
    "LoraSettings",
    "adapter_base_model",
    "apply_lora",
    "full_train_modules",
    "lora_target_names",
    "merge_adapter",
    "names_regex",
    "upcast_trainable",
]


# ------------------------------------------------------------------------ scripts/merge_lora.py
MERGE_DOC = r"""Merge a LoRA checkpoint (a --lora_enable run's output or checkpoint-N folder) into a full model folder
that stock transformers loads (AutoModelForImageTextToText + AutoProcessor), processor and run_info.json
included.

    uv run python scripts/merge_lora.py --adapter_dir output/run/checkpoint-400 \
        --output_dir output/run/merged [--base_model Qwen/Qwen3-VL-4B-Instruct] [--dtype auto]

The base model defaults to the one the adapter was trained on (adapter_config.json, else run_info.json).
"""


def parse_merge_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=MERGE_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter_dir", required=True, help="folder with adapter_config.json (a LoRA checkpoint)")
    p.add_argument("--output_dir", required=True, help="where to write the merged model")
    p.add_argument("--base_model", default=None, help="base model folder or hub id (default: the adapter's)")
    p.add_argument("--dtype", default="auto", help="auto (the base checkpoint's), bf16, fp16 or fp32")
    return p.parse_args(argv)


def merge_main(argv: list[str] | None = None) -> int:
    args = parse_merge_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        out = merge_adapter(args.adapter_dir, args.output_dir, base_model=args.base_model, dtype=args.dtype)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Merged model written to {out}")
    return 0
