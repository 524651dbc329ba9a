#!/usr/bin/env python
"""Ask a checkpoint a question about one or more images and print the answer.

    uv run python scripts/infer.py --model_path output/qwen3vl_flare25_starter --image x.png --question "..." --task_type detection

`--help` for every option; the code is qwenvl/eval/cli.py.
"""

import sys

from qwenvl.eval.cli import infer_main as main
from qwenvl.eval.cli import parse_infer_args as parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
