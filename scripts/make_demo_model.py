"""Build the tiny random Qwen3-VL demo model (offline) into a folder that AutoModel / AutoProcessor load.

Usage: uv run python scripts/make_demo_model.py --output_dir demo/tiny_qwen3vl [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qwenvl.model.tiny import build_tiny_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", type=Path, required=True, help="Folder to write the model into.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default 0).")
    args = parser.parse_args(argv)
    out = build_tiny_model(args.output_dir, seed=args.seed)
    print(f"Tiny Qwen3-VL written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
