"""qwenvl/machine.py: a machine whose NVIDIA GPUs torch cannot use stops every launcher, the GPU check and
evaluation before a model loads. The GPUs are faked with an ``nvidia-smi`` on PATH (this machine has none, and
torch here sees no CUDA: exactly a broken-CUDA machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwenvl.machine import EXIT_UNUSABLE, Machine, check, cuda_problem, launch_problems

REPO = Path(__file__).resolve().parents[1]
FAKE_SMI = """#!/bin/sh
case "$*" in
  *query-gpu*) printf 'NVIDIA A100-SXM4-80GB, 535.104.05\\nNVIDIA A100-SXM4-80GB, 535.104.05\\n' ;;
  *) echo '| NVIDIA-SMI 535.104.05    Driver Version: 535.104.05    CUDA Version: 12.2 |' ;;
esac
"""


@pytest.fixture
def fake_gpus(tmp_path) -> dict:
    """An environment whose PATH has an nvidia-smi listing two A100s on driver 535 (CUDA 12.2 at most)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("ALLOW_CPU", "CUDA_VISIBLE_DEVICES")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


def _old_driver(**kw) -> Machine:
    base = dict(
        gpus=["NVIDIA A100-SXM4-80GB"] * 2, driver="535.104.05", driver_cuda="12.2", torch="2.15.0+cu132"
    )
    base.update(torch_cuda="13.2", cuda=False)
    base.update(kw)
    return Machine(**base)


def test_old_driver_names_both_versions_and_both_fixes():
    message = cuda_problem(
        _old_driver(cuda_warning="The NVIDIA driver on your system is too old (found version 12020).")
    )
    assert message.startswith(
        "this machine has NVIDIA GPUs (2 x NVIDIA A100-SXM4-80GB) but torch 2.15.0+cu132"
    )
    assert "built for CUDA 13.2, which needs NVIDIA driver 580.65.06 or newer" in message
    assert "this machine has driver 535.104.05 (CUDA 12.2 at most)" in message
    assert "upgrade the NVIDIA driver to 580 or newer" in message
    assert (
        "pip install torch==2.15.0 torchvision --index-url https://download.pytorch.org/whl/cu121" in message
    )
    assert "torch said: The NVIDIA driver on your system is too old" in message
    assert "ALLOW_CPU=1" in message


def test_cpu_only_torch_on_a_gpu_machine_and_the_cases_that_are_no_problem():
    message = cuda_problem(
        _old_driver(torch="2.11.0+cpu", torch_cuda=None, driver="580.1", driver_cuda="13.0")
    )
    assert "Cause: torch 2.11.0+cpu is a CPU-only build." in message and "whl/cu130" in message
    assert cuda_problem(_old_driver(cuda=True)) is None  # usable
    assert cuda_problem(_old_driver(gpus=[])) is None  # no GPUs at all: a CPU machine
    assert cuda_problem(_old_driver(hidden=True)) is None  # CUDA_VISIBLE_DEVICES="" on purpose
    devices = cuda_problem(
        _old_driver(gpus=["/dev/nvidia0"], driver=None, driver_cuda=None, torch_cuda="13.0")
    )
    assert "(/dev/nvidia0)" in devices and "not the driver's age" in devices


def test_allow_cpu_turns_the_error_into_a_warning(monkeypatch, capsys):
    assert check(_old_driver()) is False
    assert capsys.readouterr().err.startswith("error: this machine has NVIDIA GPUs")
    monkeypatch.setenv("ALLOW_CPU", "1")
    assert check(_old_driver()) is True
    err = capsys.readouterr().err
    assert (
        err.startswith("warning: this machine has NVIDIA GPUs") and "ALLOW_CPU=1: running on the CPU." in err
    )


def test_gpu_launches_need_a_gpu_per_process_and_bf16_where_it_is_asked_for(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    good = Machine(gpus=["NVIDIA A100"] * 2, cuda=True, gpu_count=2, bf16=True, gpu_name="NVIDIA A100")
    assert launch_problems(good, nproc=2) == [] and launch_problems(good) == []
    (too_many,) = launch_problems(good, nproc=4)
    assert too_many == (
        "NPROC_PER_NODE=4 but torch sees 2 GPU(s) (CUDA_VISIBLE_DEVICES=0,1): one process per GPU, so set "
        "NPROC_PER_NODE=2 or make more GPUs visible."
    )
    v100 = Machine(gpus=["Tesla V100"], cuda=True, gpu_count=1, bf16=False, gpu_name="Tesla V100-SXM2-32GB")
    for asked in (None, True):  # the launcher's default (bf16) and an explicit BF16=True
        (no_bf16,) = launch_problems(v100, bf16=asked)
        assert no_bf16.startswith("Tesla V100-SXM2-32GB has no bf16 support") and "set BF16=False" in no_bf16
    assert launch_problems(v100, bf16=False) == []
    cpu = Machine(cuda=False)
    assert launch_problems(cpu, nproc=4, bf16=True) == []  # a CPU run: processes over gloo, bf16 switched off


def test_every_launcher_and_the_gpu_check_stop_before_a_model_loads(fake_gpus, tmp_path):
    env = {**fake_gpus, "SKIP_SYNC": "1", "MODEL_PATH": str(tmp_path / "no_model"), "REPORT_TO": "none"}
    for script in ("sft_qwen3_4b_flare.sh", "dry_run.sh", "grpo_qwen3_4b_flare.sh", "gpu_check.sh"):
        proc = subprocess.run(
            ["bash", f"scripts/{script}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == EXIT_UNUSABLE, (script, proc.stdout[-2000:], proc.stderr[-2000:])
        assert "error: this machine has NVIDIA GPUs (2 x NVIDIA A100-SXM4-80GB)" in proc.stderr, script
        assert "driver 535.104.05 (CUDA 12.2 at most)" in proc.stderr, script
        assert "Qwen3-VL" not in proc.stdout and "[gpu_check] building" not in proc.stdout, (
            script
        )  # no banner


def test_evaluation_stops_too_and_allow_cpu_lets_the_probe_through(fake_gpus, tmp_path):
    cmd = [sys.executable, "scripts/evaluate_flare.py", "--model_path", str(tmp_path / "m"), "--split", "val"]
    cmd += ["--output_dir", str(tmp_path / "eval")]
    proc = subprocess.run(cmd, cwd=REPO, env=fake_gpus, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_UNUSABLE and "error: this machine has NVIDIA GPUs" in proc.stderr
    allowed = {**fake_gpus, "ALLOW_CPU": "1"}
    cmd = [sys.executable, "-m", "qwenvl.machine", "--launch", "--nproc", "4"]
    proc = subprocess.run(cmd, cwd=REPO, env=allowed, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:3] == ["0", "0", "0"]  # on the CPU: no CUDA, no GPU, no bf16
    assert "warning: ALLOW_CPU=1: running on the CPU." in proc.stderr
