"""Check the training data before a run: annotation files, images, and real samples through the training code
path with the model's processor. Exit status 0 only when every check passes.

    uv run python scripts/test_data_loading.py [--datasets NAME ...] [--num_images 25] [--num_samples 8]
        [--model_path Qwen/Qwen3-VL-4B-Instruct | --demo_model] [--model_max_length 4096]
        [--min_pixels 784] [--max_pixels 50176] [--converted_dir DIR]

The logic lives in qwenvl/tools/data_check.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, installed or not

from qwenvl.tools.data_check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
