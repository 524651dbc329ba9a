"""What a person reads on the console of single-process training: no warning the toolkit causes, no bar inside
the log (the demo's training step, scripts/sft_qwen3_4b_flare.sh with --disable_tqdm True)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_one_process_without_a_gpu_runs_without_torchruns_rank_variables(monkeypatch):
    from qwenvl.train.recipe import init_cpu_distributed

    torchrun = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "0"}
    for name, value in torchrun.items():
        monkeypatch.setenv(name, value)
    assert init_cpu_distributed(["--output_dir", "x"]) == ["--output_dir", "x"]
    assert [name for name in torchrun if name in os.environ] == []


def test_single_process_training_console_has_no_distributed_warning_and_no_weight_bar(
    tiny_dir, demo_converted, tmp_path
):
    env = {
        **os.environ,
        "FLARE25_CONVERTED_DIR": str(demo_converted),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "SKIP_SYNC": "1",
        "DS_ACCELERATOR": "cpu",
        "MODEL_PATH": str(tiny_dir),
        "OUTPUT_DIR": str(tmp_path / "run"),
        "DATASETS": "flare_neojaundice,flare_retino",
        "MAX_STEPS": "2",
        "BATCH_SIZE": "2",
        "GRAD_ACCUM": "1",
        "MIN_PIXELS": "1024",
        "MAX_PIXELS": "16384",
        "SAVE_STEPS": "2",
        "LOGGING_STEPS": "1",
        "DATALOADER_WORKERS": "0",
        "GRADIENT_CHECKPOINTING": "False",
        "DEEPSPEED": "none",
        "REPORT_TO": "none",
        "NPROC_PER_NODE": "1",
    }
    proc = subprocess.run(
        ["bash", "scripts/sft_qwen3_4b_flare.sh", "--save_only_model", "True", "--disable_tqdm", "True"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    assert "run finished at step 2" in console
    assert "process group is initialized, but parallel_mode" not in console
    assert "Loading weights" not in console and "\r" not in console  # no bar drawn into the log
