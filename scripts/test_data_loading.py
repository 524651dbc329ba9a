"""Check the training data before a run: annotation files, images, and real samples through the training code
path with the model's processor. Exit status 0 only when every check passes.

    uv run python scripts/test_data_loading.py [--datasets NAME ...] [--num_images 25] [--num_samples 8]
        [--model_path Qwen/Qwen3-VL-4B-Instruct | --demo_model] [--model_max_length 4096]
        [--min_pixels 784] [--max_pixels 50176] [--converted_dir DIR]

The logic lives in qwenvl/tools/data_check/.
"""

from __future__ import annotations

import sys

from qwenvl.tools.data_check import main

if __name__ == "__main__":
    sys.exit(main())
