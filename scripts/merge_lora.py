#!/usr/bin/env python
r"""Merge a LoRA checkpoint (a --lora_enable run's output or checkpoint-N folder) into a full model folder
that stock transformers loads (AutoModelForImageTextToText + AutoProcessor), processor and run_info.json
included.

    uv run python scripts/merge_lora.py --adapter_dir output/run/checkpoint-400 \
        --output_dir output/run/merged [--base_model Qwen/Qwen3-VL-4B-Instruct] [--dtype auto]

The base model defaults to the one the adapter was trained on (adapter_config.json, else run_info.json).
"""

from qwenvl.train.lora import merge_main as main
from qwenvl.train.lora import parse_merge_args as parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    raise SystemExit(main())
