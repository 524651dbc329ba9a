"""Defaults shared by training, the data check, the benchmark and evaluation, stated once.

They are the training guide's values; ``scripts/sft_qwen3_4b_flare.sh`` states the same ones for the guide's
run, and ``tests/test_defaults.py`` holds the two together.
"""

from __future__ import annotations

MODEL = "Qwen/Qwen3-VL-4B-Instruct"  # hub id or local folder of the model to finetune
MAX_PIXELS = 50176  # most pixels per image after resizing: 49 visual tokens of 32x32 pixels
MIN_PIXELS = 784  # fewest pixels per image after resizing
MODEL_MAX_LENGTH = 4096  # longest sample in tokens; longer ones are dropped before training, never cut
