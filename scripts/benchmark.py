#!/usr/bin/env python
"""Benchmark training configurations on the same data: the guide's (batch 1, padded, accumulation 16) against
padding-free packing and LoRA; JSON and a Markdown table. `--help` for usage; the code is qwenvl/bench/cli.py.
"""

import sys

from qwenvl.bench.cli import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
