#!/usr/bin/env python
"""Time the same evaluation on both generation backends (hf, vllm): records/s, tokens/s, time to first answer,
peak memory; JSON and a Markdown table. `--help` for usage; the code is qwenvl/bench/generation.py."""

import sys

from qwenvl.bench.generation import main

if __name__ == "__main__":
    sys.exit(main())
