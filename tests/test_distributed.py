"""Several processes on CPU (gloo): plain DDP forms one data-parallel job, and a stop request to the launcher
ends every rank at the same step with one complete checkpoint that ``auto`` resumes exactly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from test_training import REPO, TRAIN, _base_args, _env, _free_port, _log, _losses, _torchrun


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_processes_without_deepspeed_are_one_data_parallel_job(tiny_dir, demo_converted, tmp_path):
    common = dict(max_steps="1", gradient_accumulation_steps="1", dataset_use="flare_retino")
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    proc = _torchrun(
        _base_args(tiny_dir, ddp, per_device_train_batch_size="1", **common), demo_converted, nproc=2
    )
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in proc.stdout + proc.stderr
    _torchrun(_base_args(tiny_dir, single, per_device_train_batch_size="2", **common), demo_converted)
    steps = [r["step"] for r in _log(ddp) if "loss" in r]
    assert steps == [1]  # written once, by rank 0
    assert _losses(ddp)[1] == pytest.approx(_losses(single)[1], rel=1e-5)
    record = next(r for r in _log(ddp) if "loss" in r)
    assert record["samples_per_step"] == 2  # 1 sample x 2 ranks


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigterm_to_the_launcher_stops_every_rank_at_one_step_and_auto_resumes_exactly(
    tiny_dir, demo_converted, tmp_path
):
    import psutil

    out = tmp_path / "stopped"
    common = dict(lr_scheduler_type="constant", gradient_accumulation_steps="1", dataset_use="flare_retino")
    args = _base_args(tiny_dir, out, max_steps="400", save_strategy="steps", save_steps="1000", **common)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--shutdown-timeout=300"]
    cmd += [f"--master_port={_free_port()}", TRAIN, *args]
    launcher = subprocess.Popen(
        cmd, env=_env(demo_converted), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 600
    while time.time() < deadline and not ((out / "train_log.jsonl").exists() and len(_losses(out)) >= 2):
        time.sleep(0.5)
    workers = psutil.Process(launcher.pid).children(recursive=True)
    assert len(workers) >= 2
    launcher.send_signal(signal.SIGTERM)
    output, _ = launcher.communicate(timeout=600)
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"orphan workers: {alive}"
    # The workers stopped by themselves (torchrun itself re-raises its SignalException after they exit).
    assert "SIGTERM received" in output and "KeyboardInterrupt" not in output, output[-3000:]
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1, output[-3000:]
    stop = int(checkpoints[0].name.split("-")[1])
    assert 2 <= stop < 400 and (checkpoints[0] / "checkpoint_complete.json").is_file()
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"

    total = stop + 2
    proc = _torchrun(
        _base_args(tiny_dir, out, max_steps=str(total), resume_from_checkpoint="auto", **common),
        demo_converted,
        nproc=2,
    )
    assert f"Resuming from {checkpoints[0]}" in proc.stdout + proc.stderr
    reference = tmp_path / "reference"
    _torchrun(
        _base_args(tiny_dir, reference, max_steps=str(total), per_device_train_batch_size="2", **common),
        demo_converted,
    )
    steps = [r["step"] for r in _log(out) if "loss" in r]
    assert steps == list(range(1, total + 1))  # every step once
    resumed, want = _losses(out), _losses(reference)
    for step in range(1, total + 1):
        assert resumed[step] == pytest.approx(want[step], rel=1e-4), (step, resumed, want)
