"""Time the FLARE25 -> Qwen3-VL conversion of the five starter datasets on a generated demo tree.

``uv run python scripts/benchmark_conversion.py [--samples_per_split 500] [--output FILE]``

The demo tree (all 19 datasets, ``samples_per_split`` records per question file) is generated into a temporary
folder; only the starters' train + val conversion is timed. With the default 500, the starters' train + val
question files hold 5 x 2 x 500 = 5,000 records (plus 2,500 validation-hidden inputs also converted by
``--splits val``). Figures go to stdout and to ``--output`` (default ``output/benchmarks/conversion.json``).
"""

import sys

from data_conversion.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
