#!/usr/bin/env python
r"""Ask a checkpoint a question about one or more images and print the answer.

    uv run python scripts/infer.py --model_path output/qwen3vl_flare25_starter \
        --image lesion.png --question "Detect all breast lesions in this ultrasound image." --task_type detection

For box tasks (``--task_type detection`` / ``instance_detection``, or boxes found in the answer) the boxes are
also printed in pixels of the first image (the model answers on Qwen3-VL's 0-1000 grid; ``--box_format pixel``
for a model trained on pixel boxes). Prompt and pixel limits are the ones evaluation and training use.
"""

import sys

from qwenvl.eval.cli import infer_main as main
from qwenvl.eval.cli import parse_infer_args as parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
