"""Watch a training run from its output folder: progress, ETA, loss, learning rate, GPUs, run state.

    uv run python scripts/monitor_training.py --output_dir ./output/qwen3vl_flare25_starter [--refresh 10]
        [--once [--json]] [--tail N] [--plot loss.png]

See docs/monitoring.md; the logic lives in qwenvl/tools/monitor/.
"""

from __future__ import annotations

import sys

from qwenvl.tools.monitor import main

if __name__ == "__main__":
    sys.exit(main())
