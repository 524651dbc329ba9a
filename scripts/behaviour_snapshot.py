#!/usr/bin/env python
r"""Fingerprint what the toolkit produces on the demo, to show a refactoring changed no behaviour.

    uv run python scripts/behaviour_snapshot.py --output before.json           # on the old tree
    uv run python scripts/behaviour_snapshot.py --output after.json --compare before.json

Runs the guide's commands as a user would (they are the contract, whatever the code behind them looks like):
demo tree (plain and ``--with-defects``) -> conversion -> validation -> tiny model -> 6 training steps through
``scripts/sft_qwen3_4b_flare.sh`` -> evaluation of the trained checkpoint on every dataset's validation
records -> ``score_predictions.py`` on the predictions. Each output file is reduced to a SHA-256 of its
normalised content (the temporary root replaced, wall-clock and version fields dropped); training losses are
kept as numbers. ``--compare`` prints every difference and exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Fields that legitimately differ between two runs of the same code.
VOLATILE = re.compile(
    r"(time|date|duration|seconds|elapsed|per_s|_s$|created|version|git|hostname|pid|python|platform"
    r"|memory|rss|throughput|samples_per|tokens_per|started|finished|_at$|command|argv)",
    re.IGNORECASE,
)


def _normalise(value, root: str):
    if isinstance(value, dict):
        return {k: _normalise(v, root) for k, v in sorted(value.items()) if not VOLATILE.search(k)}
    if isinstance(value, list):
        return [_normalise(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<ROOT>")
    return value


def _digest_file(path: Path, root: str) -> str:
    data = path.read_bytes()
    if path.suffix in (".json", ".jsonl", ".md", ".txt", ".log"):
        text = data.decode("utf-8", errors="replace")
        try:
            if path.suffix == ".json":
                text = json.dumps(_normalise(json.loads(text), root), sort_keys=True)
            elif path.suffix == ".jsonl":
                lines = [json.loads(line) for line in text.splitlines() if line]
                text = "\n".join(json.dumps(_normalise(r, root), sort_keys=True) for r in lines)
        except ValueError:  # the demo's seeded defects include a truncated JSON file
            pass
        text = re.sub(r"generation: [0-9.]+ s", "generation: <seconds> s", text)  # metrics.md's timing
        data = text.replace(root, "<ROOT>").encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _digest_tree(folder: Path, root: str, pattern: str = "*.json") -> dict[str, str]:
    return {str(p.relative_to(folder)): _digest_file(p, root) for p in sorted(folder.rglob(pattern))}


def _run(cmd: list[str], env: dict | None = None) -> None:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")


def snapshot(work: Path) -> dict:
    py = [sys.executable]
    root = str(work)
    out: dict = {}
    for variant, extra in (("plain", []), ("defects", ["--with-defects"])):
        raw, conv = work / variant / "raw", work / variant / "converted"
        _run(
            py
            + ["data_conversion/make_demo_dataset.py", "--output_dir", str(raw), "--samples_per_split", "12"]
            + extra
        )
        out[f"{variant}/raw"] = _digest_tree(raw, root, "*.*")
        _run(py + ["data_conversion/convert_flare_to_qwen3vl.py", "--input_dir", str(raw), "--output_dir", str(conv),
                   "--all", "--splits", "train", "val", "test", "--no_progress"])  # fmt: skip
        out[f"{variant}/converted"] = _digest_tree(conv, root)
        proc = subprocess.run(py + ["data_conversion/validate_conversion.py", "--input_dir", str(conv)], cwd=REPO,
                              capture_output=True, text=True)  # fmt: skip
        out[f"{variant}/validation_exit"] = proc.returncode
        out[f"{variant}/validation_output"] = hashlib.sha256(
            proc.stdout.replace(root, "<ROOT>").encode()
        ).hexdigest()[:16]
    conv = work / "plain" / "converted"
    model = work / "model"
    _run(py + ["scripts/make_demo_model.py", "--output_dir", str(model)])
    run_dir = work / "run"
    _run(
        ["bash", "scripts/sft_qwen3_4b_flare.sh", "--save_steps", "1000"],
        env={"FLARE25_CONVERTED_DIR": str(conv), "MODEL_PATH": str(model), "OUTPUT_DIR": str(run_dir),
             "MAX_STEPS": "6", "GRAD_ACCUM": "2", "LR": "2e-3", "DEEPSPEED": "none", "REPORT_TO": "none",
             "NPROC_PER_NODE": "1", "DATALOADER_WORKERS": "0", "GRADIENT_CHECKPOINTING": "False",
             "TUNE_MM_VISION": "True", "SKIP_SYNC": "1"},
    )  # fmt: skip
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line]
    out["train/losses"] = [round(r["loss"], 6) for r in log if "loss" in r]
    out["train/grad_norms"] = [round(r["grad_norm"], 4) for r in log if "grad_norm" in r]
    ev = work / "eval"
    _run(
        py + ["scripts/evaluate_flare.py", "--model_path", str(run_dir), "--split", "val", "--limit", "3",
              "--output_dir", str(ev), "--no_progress"],
        env={"FLARE25_CONVERTED_DIR": str(conv)},
    )  # fmt: skip
    eval_files = _digest_tree(ev, root, "*").items()  # pictures and report.html (timings, date) vary per run
    out["eval"] = {k: v for k, v in eval_files if not k.endswith((".png", ".html"))}
    scored = work / "scored.json"
    _run(py + ["scripts/score_predictions.py", "--predictions", str(ev / "predictions.json"),
               "--ground_truth", str(work / "plain" / "raw" / "validation-public"), "--output", str(scored)])  # fmt: skip
    out["score_predictions"] = _digest_file(scored, root)
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}/"))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def compare(this: dict, other: dict) -> list[str]:
    a, b = _flatten(this), _flatten(other)
    return [f"{k}: {b.get(k, '<absent>')} -> {a.get(k, '<absent>')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="where to write the snapshot JSON")
    p.add_argument("--compare", default=None, help="an earlier snapshot; print differences, exit 1 if any")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="behaviour_snapshot_") as tmp:
        snap = snapshot(Path(tmp))
    Path(args.output).write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n")
    n_files = sum(len(v) for v in snap.values() if isinstance(v, dict))
    print(
        f"snapshot of {n_files} output files and {len(snap['train/losses'])} training losses -> {args.output}"
    )
    if args.compare:
        diffs = compare(snap, json.loads(Path(args.compare).read_text()))
        for line in diffs:
            print("DIFFERENT", line)
        print("identical" if not diffs else f"{len(diffs)} differences")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
