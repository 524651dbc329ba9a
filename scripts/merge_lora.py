#!/usr/bin/env python
r"""Merge a LoRA checkpoint (a --lora_enable run's output or checkpoint-N folder) into a full model folder
that stock transformers loads (AutoModelForImageTextToText + AutoProcessor), processor and run_info.json
included.

    uv run python scripts/merge_lora.py --adapter_dir output/run/checkpoint-400 \
        --output_dir output/run/merged [--base_model Qwen/Qwen3-VL-4B-Instruct] [--dtype auto]

The base model defaults to the one the adapter was trained on (adapter_config.json, else run_info.json).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwenvl.train.lora import merge_adapter  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter_dir", required=True, help="folder with adapter_config.json (a LoRA checkpoint)")
    p.add_argument("--output_dir", required=True, help="where to write the merged model")
    p.add_argument("--base_model", default=None, help="base model folder or hub id (default: the adapter's)")
    p.add_argument("--dtype", default="auto", help="auto (the base checkpoint's), bf16, fp16 or fp32")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        out = merge_adapter(args.adapter_dir, args.output_dir, base_model=args.base_model, dtype=args.dtype)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Merged model written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
