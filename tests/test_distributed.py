"""Several processes on CPU (gloo): plain DDP forms one data-parallel job (1 node x 2 and 2 nodes x 1 on
localhost), packs reach each rank once, and a stop request to the launcher ends every rank at the same step with
one complete checkpoint that ``auto`` resumes exactly. ZeRO-3 (kill during a save, resume, LoRA, text-only
batches) is in test_training.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from test_training import (
    REPO,
    TRAIN,
    _base_args,
    _env,
    _first_step_loss,
    _free_port,
    _log,
    _losses,
    _torchrun,
)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_two_processes_without_deepspeed_are_one_data_parallel_job(
    tiny_dir, demo_converted, tmp_path, registry_at
):
    """Plain DDP on gloo, 1 node x 2 processes and 2 nodes x 1 process on localhost (NNODES=2, NODE_RANK=0|1,
    one MASTER_ADDR/PORT): both log one loss per step, written once, equal to a one-process step with batch 2,
    and not the loss a process training alone would log (the issue: each process trained alone on all the
    data, 11.9515 and 11.9609 written twice)."""
    common = dict(max_steps="1", gradient_accumulation_steps="1", dataset_use="flare_retino")
    ddp, nodes = tmp_path / "ddp", tmp_path / "nodes"
    proc = _torchrun(
        _base_args(tiny_dir, ddp, per_device_train_batch_size="1", **common), demo_converted, nproc=2
    )
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in proc.stdout + proc.stderr

    port, args = _free_port(), _base_args(tiny_dir, nodes, per_device_train_batch_size="1", **common)
    launchers, logs = [], [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    for rank in (0, 1):  # what NNODES=2 NODE_RANK=<rank> scripts/sft_qwen3_4b_flare.sh passes to torchrun
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}"]
        cmd += ["--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}", TRAIN, *args]
        with open(logs[rank], "w") as sink:
            launchers.append(
                subprocess.Popen(
                    cmd, env=_env(demo_converted), cwd=REPO, stdout=sink, stderr=subprocess.STDOUT
                )
            )
    for launcher, log in zip(launchers, logs):
        assert launcher.wait(timeout=600) == 0, log.read_text()[-4000:]

    registry_at(demo_converted)
    batch_of_two = _first_step_loss(tiny_dir, "flare_retino", batch_size=2)
    alone = _first_step_loss(tiny_dir, "flare_retino", batch_size=1)
    for out in (ddp, nodes):
        assert [r["step"] for r in _log(out) if "loss" in r] == [1]  # written once, by rank 0
        assert _losses(out)[1] == pytest.approx(batch_of_two, rel=1e-5)
        assert _losses(out)[1] != pytest.approx(alone, rel=1e-3)
        record = next(r for r in _log(out) if "loss" in r)
        assert record["samples_per_step"] == 2  # 1 sample x 2 ranks
    assert _losses(nodes)[1] == pytest.approx(_losses(ddp)[1], rel=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_per_dataset_loss_over_two_ranks_equals_one_process(tiny_dir, demo_converted, tmp_path, registry_at):
    """--loss_normalisation dataset over 2 DDP ranks x 2 samples (a long detection answer and letters from
    two datasets): the step's loss is the one-process loss of the same 4 samples in one batch, not the
    per-token one (the per-dataset counts are gathered over the ranks before the step)."""
    datasets = "flare_busi_det%34,flare_retino%34"
    common = dict(
        max_steps="1", gradient_accumulation_steps="1", dataset_use=datasets, loss_normalisation="dataset"
    )
    ddp = tmp_path / "ddp"
    _torchrun(_base_args(tiny_dir, ddp, per_device_train_batch_size="2", **common), demo_converted, nproc=2)
    registry_at(demo_converted)
    one = _first_step_loss(tiny_dir, datasets, batch_size=4, loss_normalisation="dataset")
    per_token = _first_step_loss(tiny_dir, datasets, batch_size=4)
    # A random model's token losses are all near ln(151,936) = 11.93: the modes differ by ~5e-3 here,
    # the ranks must agree with one process far closer than that.
    assert _losses(ddp)[1] == pytest.approx(one, abs=1e-5)
    assert abs(one - per_token) > 1e-3


def test_packs_reach_each_rank_once_through_the_prepared_loader():
    """The trainer's packed loader as accelerate prepares it for 2 processes (its own prepare_data_loader with
    the world size given): each rank gets its own packs, the same number of micro-batches, and together every
    sample exactly once. Without unshard accelerate deals every other batch to each rank and half is lost."""
    from accelerate.data_loader import prepare_data_loader

    from qwenvl.data.packing import PackedBatchSampler, packed_dataloader, unshard

    lengths = [20 + (i * 37) % 200 for i in range(60)]

    def per_rank(fix: bool) -> list[list[list[int]]]:
        seen = []
        for rank in (0, 1):
            sampler = PackedBatchSampler(lengths, 512, packs_per_batch=2, num_replicas=2, rank=rank, seed=3)
            args = SimpleNamespace(dataloader_num_workers=0, dataloader_pin_memory=False, process_index=rank)
            loader = packed_dataloader(list(range(len(lengths))), sampler, list, args)
            loader = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False)
            if fix:
                unshard(loader, sampler)
            seen.append(list(loader))
        return seen

    ranks = per_rank(fix=True)
    assert len(ranks[0]) == len(ranks[1]) == 4
    ids = [i for batches in ranks for batch in batches for i in batch]
    assert sorted(ids) == list(range(len(lengths)))  # none lost, none twice
    assert not set(i for b in ranks[0] for i in b) & set(i for b in ranks[1] for i in b)
    assert all(sum(lengths[i] for i in batch) <= 2 * 512 for batches in ranks for batch in batches)
    lost = per_rank(fix=False)
    assert len({i for batches in lost for batch in batches for i in batch}) < len(lengths)


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
