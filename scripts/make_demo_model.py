"""Build the tiny random Qwen3-VL demo model (offline) into a folder that AutoModel / AutoProcessor load.

Usage: uv run python scripts/make_demo_model.py --output_dir demo/tiny_qwen3vl [--seed 0]
"""

from qwenvl.model.tiny import main

if __name__ == "__main__":
    raise SystemExit(main())
