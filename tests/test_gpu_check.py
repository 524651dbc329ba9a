"""scripts/gpu_check.sh --tiny: the GPU acceptance command's code path on the CPU, so it cannot rot.

Every step must end with numeric figures or a recorded reason (skip, timeout, oom, error); the JSON and the
Markdown table are written even when steps fail."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from qwenvl.bench.configs import mfu, peak_bf16_flops
from qwenvl.bench.gpu_check import STEPS, TRAIN_CONFIGS

REPO = Path(__file__).resolve().parents[1]


def test_mfu_and_peak_flops_table() -> None:
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA H200") == 989e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16_flops("some CPU") is None
    # 4.44B parameters at 10,000 tokens/s on an H100: 6 x 4.44e9 x 1e4 / 989e12 = 26.9 %
    assert mfu(4_437_815_808, 10_000, 989e12) == pytest.approx(0.2692, abs=1e-4)
    assert mfu(4_437_815_808, 10_000, None) is None
    assert STEPS == ("environment", "guide", "packed", "lora", "packed+lora", "generation")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_gpu_check_tiny_writes_every_step(tmp_path: Path, demo_converted: Path) -> None:
    out = tmp_path / "check"
    env = {"GPU_CHECK_DATA": str(tmp_path / "data")}
    # reuse the session's converted demo tree instead of building one (the script builds it when missing)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "converted").symlink_to(demo_converted)
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--tiny", "--output", str(out), "--budget_s", "300"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["tiny"] is True and report["elapsed_s"] <= 300 + 30
    env_report = report["environment"]
    assert env_report["torch"] and env_report["transformers"]
    assert env_report["attention_choice"] in ("flash_attention_2", "sdpa_packed")
    assert set(report["steps"]) == {*TRAIN_CONFIGS, "generation"}
    for name, step in report["steps"].items():
        if step["status"] != "ok":  # recorded as such, with the reason
            assert step["status"] in ("skipped", "timeout", "oom", "error")
            assert step.get("reason") or step.get("error"), name
            continue
        if name == "generation":
            for batch in step["batches"].values():
                assert batch["generated_tokens"] > 0 and batch["tokens_per_s"] > 0
            continue
        for key in ("samples_per_s", "tokens_per_s", "step_time_s", "peak_memory_mb"):
            assert isinstance(step[key], (int, float)) and math.isfinite(step[key]) and step[key] > 0, (
                name,
                key,
            )
        assert step["attn_implementation"] == env_report["attention_choice"]
        assert step["projected_starter_epoch_s"] > 0 and step["projected_all19_epoch_s"] > 0
    table = (out / "gpu_check.md").read_text()
    assert all(f"| {name} |" in table for name in TRAIN_CONFIGS)
