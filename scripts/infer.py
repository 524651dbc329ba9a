#!/usr/bin/env python
r"""Ask a checkpoint a question about one or more images and print the answer.

    uv run python scripts/infer.py --model_path output/qwen3vl_flare25_starter \
        --image lesion.png --question "Detect all breast lesions in this ultrasound image." --task_type detection

For box tasks (``--task_type detection`` / ``instance_detection``, or boxes found in the answer) the boxes are
also printed in pixels of the first image (the model answers on Qwen3-VL's 0-1000 grid; ``--box_format pixel``
for a model trained on pixel boxes). Prompt and pixel limits are the ones evaluation and training use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="checkpoint folder (or a locally cached hub id)")
    p.add_argument(
        "--image", action="append", required=True, help="an image file; repeat for several, in order"
    )
    p.add_argument("--question", required=True, help="the question, options included")
    p.add_argument(
        "--task_type",
        default=None,
        help="classification, multi-label classification, detection, instance_detection, counting, "
        "regression, report_generation: picks the token budget and the answer parser",
    )
    p.add_argument(
        "--box_format", default="qwen1000", choices=("qwen1000", "pixel"), help="how the model writes boxes"
    )
    p.add_argument(
        "--max_new_tokens", type=int, default=None, help="default: the task's budget (256 without a task)"
    )
    p.add_argument("--min_pixels", type=int, default=None, help="default: the checkpoint's training value")
    p.add_argument("--max_pixels", type=int, default=None, help="default: the checkpoint's training value")
    p.add_argument(
        "--dtype", default=None, help="bfloat16 | float16 | float32 (default: bf16 on GPU, fp32 on CPU)"
    )
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from qwenvl.eval.infer import format_result, infer
    from qwenvl.model.loading import ModelNotFoundError

    try:
        result = infer(
            args.model_path,
            args.image,
            args.question,
            args.task_type,
            args.box_format,
            args.max_new_tokens,
            args.min_pixels,
            args.max_pixels,
            args.dtype,
            args.device,
        )
    except (ModelNotFoundError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_result(result, args.box_format))
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
