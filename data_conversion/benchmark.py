"""Time the FLARE25 -> Qwen3-VL conversion of the five starter datasets on a generated demo tree.

``uv run python scripts/benchmark_conversion.py [--samples_per_split 500] [--output FILE]``

The demo tree (all 19 datasets, ``samples_per_split`` records per question file) is generated into a temporary
folder; only the starters' train + val conversion is timed. With the default 500, the starters' train + val
question files hold 5 x 2 x 500 = 5,000 records (plus 2,500 validation-hidden inputs also converted by
``--splits val``). Figures go to stdout and to ``--output`` (default ``output/benchmarks/conversion.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import PIL

from data_conversion.converter import convert
from data_conversion.make_demo_dataset import make_demo_dataset
from qwenvl.flare.datasets import STARTER_DATASETS
from qwenvl.flare.jsonio import write_json_atomic
from qwenvl.flare.paths import REPO_ROOT

TARGET_RECORDS = 5000
SPLITS = ("train", "val")


def default_samples_per_split() -> int:
    """Records per question file so that the starters' train + val files total about TARGET_RECORDS."""
    return round(TARGET_RECORDS / (len(STARTER_DATASETS) * len(SPLITS)))


def run_benchmark(samples_per_split: int, repeat: int = 1, workdir: str | None = None) -> dict:
    """Generate the demo tree, convert the starters ``repeat`` times (fresh output each time) and return
    the figures of the fastest run."""
    with tempfile.TemporaryDirectory(prefix="flare25_bench_", dir=workdir) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_demo_dataset(root / "raw", seed=0, samples_per_split=samples_per_split)
        generate_s = time.perf_counter() - t0
        runs = []
        for i in range(repeat):
            t0 = time.perf_counter()
            report = convert(root / "raw", root / f"out{i}", STARTER_DATASETS, SPLITS, progress=False)
            runs.append((time.perf_counter() - t0, report))
    convert_s, report = min(runs, key=lambda r: r[0])
    entries = [e for d in STARTER_DATASETS for s, e in report["datasets"][d].items()]
    labelled = sum(
        e["raw"] for d in STARTER_DATASETS for s, e in report["datasets"][d].items() if s in SPLITS
    )
    totals = report["totals"]
    images = report["last_run"]["distinct_images_checked"]
    return {
        "what": "convert_flare_to_qwen3vl: five starter datasets, --splits train val, demo tree",
        "samples_per_split": samples_per_split,
        "datasets": list(STARTER_DATASETS),
        "output_files": sum(e["output_file"] is not None for e in entries),
        "train_val_records": labelled,
        "records_processed": totals["raw"],
        "records_converted": totals["converted"],
        "records_skipped": totals["skipped"],
        "distinct_images_decoded": images,
        "generate_s": round(generate_s, 2),
        "convert_s": round(convert_s, 3),
        "all_convert_s": [round(r[0], 3) for r in runs],
        "records_per_s": round(totals["raw"] / convert_s, 1),
        "train_val_records_per_s": round(labelled / convert_s, 1),
        "images_per_s": round(images / convert_s, 1),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "pillow": PIL.__version__,
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--samples_per_split",
        type=int,
        default=default_samples_per_split(),
        help=f"records per demo question file (default {default_samples_per_split()}: "
        f"about {TARGET_RECORDS} starter train + val records)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="conversion runs; the fastest is reported")
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "output" / "benchmarks" / "conversion.json",
        help="JSON file for the figures",
    )
    parser.add_argument(
        "--workdir", default=None, help="where the temporary demo tree goes (default: $TMPDIR)"
    )
    args = parser.parse_args(argv)
    figures = run_benchmark(args.samples_per_split, max(1, args.repeat), args.workdir)
    write_json_atomic(args.output, figures)
    print(json.dumps(figures, indent=2))
    print(
        f"\n{figures['records_processed']} records ({figures['train_val_records']} train + val) and "
        f"{figures['distinct_images_decoded']} images in {figures['convert_s']:.2f} s: "
        f"{figures['records_per_s']:.0f} records/s, {figures['images_per_s']:.0f} images/s "
        f"(figures in {args.output})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
