"""scripts/monitor_training.py: run states, progress, ETA, loss statistics, chart, plot and tail, on run folders
written here the way RunRecordCallback writes them, and on a real tiny training run."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from PIL import Image

from qwenvl.flare import runfiles
from qwenvl.tools import monitor as mon

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------- fixtures
def _step_line(step: int, t: float, loss: float, max_steps: int, lr: float = 1e-5) -> dict:
    return {
        "step": step,
        "epoch": round(step / max_steps, 4),
        "time": t,
        "elapsed_s": 0.0,
        "loss": loss,
        "learning_rate": lr,
        "grad_norm": 0.5,
        "samples": 16,
        "tokens": 4000,
        "samples_per_s": 3.2,
        "tokens_per_s": 800.0,
        "rss_mb": 2048.0,
        "peak_rss_mb": 3072.0,
        "max_steps": max_steps,
    }


def write_run(
    out: Path,
    lines: list[dict],
    status: str | None = "running",
    max_steps: int = 40,
    pid: int | None = None,
    resumed_at_step: int | None = None,
    text_lines: int = 0,
) -> Path:
    """A run folder as RunRecordCallback leaves it (run.json, train_log.jsonl, train.log)."""
    out.mkdir(parents=True, exist_ok=True)
    if status is not None:
        run = {
            "status": status,
            "max_steps": max_steps,
            "num_train_epochs": 1.0,
            "start_time": "2026-01-01T00:00:00",
            "resumed_at_step": resumed_at_step,
            "pid": pid,
            "argv": ["qwenvl/train/train_qwen.py"],
            "args": {"training": {"max_steps": -1}},
        }
        if status != "running":
            run["end_time"] = "2026-01-01T01:00:00"
        (out / mon.RUN_FILE).write_text(json.dumps(run))
    (out / mon.TRAIN_LOG_JSONL).write_text("".join(json.dumps(r) + "\n" for r in lines))
    (out / mon.TRAIN_LOG_TEXT).write_text("".join(f"[t] line {i}\n" for i in range(text_lines)))
    return out


LOSSES_10 = [2.0 - 0.1 * i for i in range(1, 11)]  # steps 1..10: 1.9 ... 1.0


def running_lines(t0: float, dt: float = 5.0, n: int = 10, max_steps: int = 40) -> list[dict]:
    """Start at t0, step i logged at t0 + dt * i."""
    lines = [{"event": "start", "step": 0, "time": t0}]
    lines += [_step_line(i, t0 + dt * i, LOSSES_10[i - 1], max_steps) for i in range(1, n + 1)]
    return lines


def once(out: Path, *extra: str) -> tuple[int, str]:
    printed: list[str] = []
    args = mon.build_parser().parse_args(["--output_dir", str(out), "--once", *extra])
    status = mon.snapshot_once(
        args.output_dir, args.window, args.plot, args.json, not args.no_pid_check, out=printed.append
    )
    return status, "\n".join(printed)


# ------------------------------------------------------------------------------------------- states
def test_file_names_match_the_callback() -> None:
    """The monitor's file names are the callback's: both take them from qwenvl/flare/runfiles.py (the callback's
    import is read from its source: importing it loads transformers)."""
    tree = ast.parse((REPO / "qwenvl" / "train" / "callbacks.py").read_text())
    from_runfiles = {
        alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "qwenvl.flare.runfiles"
        for alias in node.names
    }
    assert {"RUN_FILE", "TRAIN_LOG_JSONL", "TRAIN_LOG_TEXT"} <= from_runfiles
    assert mon.RUN_FILE is runfiles.RUN_FILE == "run.json"
    assert mon.TRAIN_LOG_JSONL is runfiles.TRAIN_LOG_JSONL == "train_log.jsonl"
    assert mon.TRAIN_LOG_TEXT is runfiles.TRAIN_LOG_TEXT == "train.log"


def test_running_10_of_40_steps(tmp_path: Path) -> None:
    t0 = 1_000_000.0
    out = write_run(tmp_path / "run", running_lines(t0))
    now = t0 + 53.0  # last step at t0 + 50
    snap = mon.take_snapshot(out, now=now, pid_check=False)
    assert snap.state == mon.RUNNING
    assert (snap.step, snap.max_steps, snap.percent) == (10, 40, 25.0)
    assert snap.step_time_s == 5.0 and snap.step_time_samples == 9
    assert snap.eta_s == 150.0  # 30 steps left x 5 s
    assert snap.elapsed_s == 53.0
    assert snap.loss == LOSSES_10[-1]
    assert snap.loss_avg == pytest.approx(sum(LOSSES_10) / 10)  # 1.45: all 10 within the window of 20
    assert snap.last_record_age_s == 3.0
    text = mon.format_snapshot(snap)
    assert "State: RUNNING - Running: step 10/40." in text
    assert "step 10/40 (25.0%)" in text
    assert "ETA: 2m 30s" in text and "Elapsed: 53s" in text
    assert "Loss:      1.0000   moving average (last 20): 1.4500" in text
    assert "5.00 s/step (median of the last 9 step times)" in text


def test_running_once_cli_output_has_finite_eta(tmp_path: Path) -> None:
    t0 = time.time() - 52.0
    out = write_run(tmp_path / "run", running_lines(t0))
    status, text = once(out, "--no_pid_check")
    assert status == 0
    assert "step 10/40 (25.0%)" in text
    assert "ETA: 2m 30s" in text
    assert "Loss:      1.0000" in text
    status, js = once(out, "--no_pid_check", "--json")
    snap = json.loads(js)
    assert (snap["state"], snap["step"], snap["max_steps"], snap["eta_s"]) == ("running", 10, 40, 150.0)
    assert snap["loss"] == LOSSES_10[-1] and math.isfinite(snap["eta_s"])


def test_moving_average_uses_the_last_window_steps(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", running_lines(1000.0))
    snap = mon.take_snapshot(out, now=1052.0, window=4, pid_check=False)
    assert snap.loss_avg == pytest.approx((1.3 + 1.2 + 1.1 + 1.0) / 4)
    assert snap.step_time_samples == 4  # the step-time median also covers the last 4 intervals


def test_finished(tmp_path: Path) -> None:
    t0 = 5000.0
    losses = [3.0 / i for i in range(1, 41)]
    lines = [{"event": "start", "step": 0, "time": t0}]
    lines += [_step_line(i, t0 + 2.0 * i, losses[i - 1], 40) for i in range(1, 41)]
    lines += [{"step": 40, "time": t0 + 80.5, "train_runtime": 80.0, "train_loss": 0.42, "max_steps": 40}]
    lines += [{"event": "finished", "step": 40, "time": t0 + 80.6}]
    out = write_run(tmp_path / "run", lines, status="finished")
    snap = mon.take_snapshot(out, now=t0 + 10_000, pid_check=False)  # long after: finished is not stale
    assert snap.state == mon.FINISHED
    assert (snap.step, snap.percent, snap.loss) == (40, 100.0, losses[-1])
    assert snap.elapsed_s == pytest.approx(80.6)
    assert snap.final_train_loss == 0.42
    text = mon.format_snapshot(snap)
    assert f"Finished at step 40/40; final loss {losses[-1]:.4f} (2026-01-01T01:00:00)." in text
    assert "ETA: done" in text


def test_stopped_on_request(tmp_path: Path) -> None:
    lines = running_lines(0.0) + [{"event": "stopped", "step": 10, "time": 51.0}]
    out = write_run(tmp_path / "run", lines, status="stopped")
    status, text = once(out)
    assert status == 0
    assert (
        "State: STOPPED - Stopped on request at step 10/40 (2026-01-01T01:00:00); a checkpoint was saved. "
        "Continue with --resume_from_checkpoint auto."
    ) in text
    assert "ETA: -" in text


def test_crashed_by_old_timestamps(tmp_path: Path) -> None:
    t0 = time.time() - 3 * 3600  # last record 3 h - 50 s ago, steps take 5 s
    out = write_run(tmp_path / "run", running_lines(t0))
    for step in (5, 10, 15):
        (out / f"checkpoint-{step}").mkdir()
    # checkpoint-15 was being saved when the process died: no completion marker. checkpoint-10 has its marker,
    # checkpoint-5 has a file of the same name that is a folder, not the marker (not complete either).
    (out / "checkpoint-10" / runfiles.CHECKPOINT_COMPLETE).write_text('{"step": 10}')
    (out / "checkpoint-5" / runfiles.CHECKPOINT_COMPLETE).mkdir()
    status, text = once(out, "--no_pid_check")
    assert status == mon.EXIT_CRASHED
    assert "State: CRASHED - Looks stopped: no new record for 2h 59m" in text
    assert "(expected one every ~5s, alarm after 5m 00s)" in text
    assert f"step 10/40, last record 2h 59m ago ({mon.fmt_clock(t0 + 50)})" in text
    assert (
        "(latest complete checkpoint: checkpoint-10; incomplete, skipped by auto resume: checkpoint-15)"
        in text
    )
    assert "checkpoint-15: incomplete (no completion marker: the save was cut off)" in text
    snap = mon.take_snapshot(out, pid_check=False)
    assert (snap.latest_checkpoint, snap.incomplete_checkpoints) == ("checkpoint-10", ["checkpoint-15"])
    assert json.loads(snap.to_json())["incomplete_checkpoints"] == ["checkpoint-15"]
    # The monitor and --resume_from_checkpoint auto apply one rule.
    assert runfiles.newest_complete_checkpoint(out) == (out / "checkpoint-10", [out / "checkpoint-15"])
    (out / "checkpoint-10" / runfiles.CHECKPOINT_COMPLETE).unlink()
    snap = mon.take_snapshot(out, pid_check=False)
    assert (snap.latest_checkpoint, snap.incomplete_checkpoints) == (
        None,
        ["checkpoint-15", "checkpoint-10", "checkpoint-5"],
    )
    assert (
        "no complete checkpoint saved yet; incomplete, skipped by auto resume: checkpoint-15" in snap.message
    )


def test_stale_threshold_is_20_median_steps_when_longer_than_5_minutes(tmp_path: Path) -> None:
    t0 = 0.0
    out = write_run(tmp_path / "run", running_lines(t0, dt=60.0))  # 1 min per step -> alarm after 20 min
    assert mon.take_snapshot(out, now=600 + 19 * 60, pid_check=False).state == mon.RUNNING
    assert mon.take_snapshot(out, now=600 + 21 * 60, pid_check=False).state == mon.CRASHED


def test_crashed_when_the_pid_is_dead(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(done.stdout)
    t0 = time.time() - 52.0
    out = write_run(tmp_path / "run", running_lines(t0), pid=dead_pid)
    snap = mon.take_snapshot(out)
    assert snap.pid_alive is False and snap.state == mon.CRASHED
    assert f"the training process (pid {dead_pid}) is no longer running on this machine" in snap.message


def test_alive_pid_keeps_running_and_reused_pid_does_not(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        t0 = time.time()
        out = write_run(tmp_path / "run", running_lines(t0, dt=0.01), pid=proc.pid)
        snap = mon.take_snapshot(out, now=t0 + 1.0)
        assert (snap.pid_alive, snap.state) == (True, mon.RUNNING)
        # A run that started before this process existed: the pid now belongs to someone else.
        old = write_run(tmp_path / "old", running_lines(t0 - 3600, dt=0.01), pid=proc.pid)
        assert mon.take_snapshot(old, now=t0 - 3600 + 1.0).pid_alive is False
    finally:
        proc.kill()
        proc.wait()


def test_resumed_run(tmp_path: Path) -> None:
    t0 = 10_000.0
    first = running_lines(t0, n=6)  # steps 1-6, then a crash
    t1 = t0 + 1000.0  # resumed from checkpoint-6 after a 16-minute gap
    second = [{"event": "start", "step": 6, "time": t1}]
    second += [_step_line(s, t1 + 5.0 * (s - 6), LOSSES_10[s - 1], 40) for s in range(7, 11)]
    out = write_run(tmp_path / "run", first + second, resumed_at_step=6)
    snap = mon.take_snapshot(out, now=t1 + 22.0, pid_check=False)
    assert snap.state == mon.RUNNING and snap.resumed_at_step == 6
    assert snap.step_time_s == 5.0  # the restart gap is not a step time
    assert snap.eta_s == 150.0
    assert snap.elapsed_s == 30.0 + 22.0  # 6 steps before the crash + 22 s since the resume
    text = mon.format_snapshot(snap)
    assert "(resumed at step 6)" in text and "resumed at step 6" in text.split("Started")[1]


def test_fresh_start_in_a_used_folder_ignores_the_earlier_run(tmp_path: Path) -> None:
    old = running_lines(0.0, n=10)  # an earlier run, steps 1-10
    new = running_lines(5000.0, n=3)  # started again from scratch into the same folder: steps 1-3
    out = write_run(tmp_path / "run", old + new)
    snap = mon.take_snapshot(out, now=5016.0, pid_check=False)
    assert (snap.step, snap.loss, [s for s, _ in snap.losses]) == (3, LOSSES_10[2], [1, 2, 3])
    assert snap.elapsed_s == 16.0
    assert snap.warnings == [
        "11 line(s) of train_log.jsonl before the latest fresh start belong to an earlier run in this folder; left out."
    ]
    # A resume at step 6 drops stale lines of steps 7+ written before it, keeps steps 1-6.
    lines, dropped = mon.current_run(running_lines(0.0, n=8) + [{"event": "start", "step": 6, "time": 99.0}])
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4, 5, 6] and dropped == 2


def test_missing_directory(tmp_path: Path) -> None:
    status, text = once(tmp_path / "nope")
    assert status == mon.EXIT_MISSING
    assert f"State: MISSING - Run folder {tmp_path / 'nope'} does not exist (yet). Check --output_dir" in text
    live = mon._render(tmp_path / "nope", 10.0, 20, None, False)
    assert "Waiting for it to appear (checking every 10 s)." in live


def test_waiting_before_the_first_step(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    snap = mon.take_snapshot(empty)
    assert snap.state == mon.WAITING and snap.message.startswith("No record yet")
    started = write_run(tmp_path / "started", [{"event": "start", "step": 0, "time": 100.0}])
    snap = mon.take_snapshot(started, now=160.0, pid_check=False)
    assert snap.state == mon.WAITING
    assert snap.message == "Training started 1m 00s ago; waiting for the first logged step."
    # Before the first step, the alarm waits 15 minutes.
    assert mon.take_snapshot(started, now=100.0 + 901, pid_check=False).state == mon.CRASHED


def test_nan_loss_is_marked_and_explained(tmp_path: Path) -> None:
    lines = running_lines(0.0, n=4)
    lines[3]["loss"] = float("nan")  # step 3 (JSON NaN, as json.dumps writes it)
    out = write_run(tmp_path / "run", lines)
    snap = mon.take_snapshot(out, now=21.0, pid_check=False)
    assert snap.non_finite_steps == [3]
    assert snap.loss_avg == pytest.approx((1.9 + 1.8 + 1.6) / 3)
    text = mon.format_snapshot(snap)
    assert "loss █▆×▁" in text  # 1.9, 1.8 (5/7 of the range), NaN, 1.6
    assert "loss is NaN or infinite at 1 step(s): 3." in text


def test_torn_last_line_is_ignored_and_bad_lines_reported(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", running_lines(0.0, n=3))
    with open(out / mon.TRAIN_LOG_JSONL, "a") as f:
        f.write('{"step": 4, "lo')  # being written
    log = mon.read_run_log(out)
    assert [r["step"] for r in log.steps] == [1, 2, 3] and log.bad_lines == []
    (out / mon.TRAIN_LOG_JSONL).write_text('{"event": "start", "step": 0, "time": 0}\ngarbage\n')
    assert mon.read_run_log(out).bad_lines == [2]


def test_trainer_state_fallback(tmp_path: Path) -> None:
    out = tmp_path / "run"
    ckpt = out / "checkpoint-200"
    ckpt.mkdir(parents=True)
    history = [{"step": s, "loss": 1.0 / s, "learning_rate": 1e-5, "epoch": s / 400} for s in (100, 200)]
    state = {"global_step": 200, "max_steps": 400, "log_history": history}
    (ckpt / mon.TRAINER_STATE).write_text(json.dumps(state))
    snap = mon.take_snapshot(out)
    assert (snap.state, snap.step, snap.max_steps, snap.percent, snap.loss) == (
        mon.UNKNOWN,
        200,
        400,
        50.0,
        0.005,
    )
    assert str(ckpt / mon.TRAINER_STATE) in snap.message


# ------------------------------------------------------------------------------------- chart, plot, tail
def test_sparkline() -> None:
    assert mon.sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert mon.sparkline([2.0, 2.0, 2.0]) == "▄▄▄"
    assert mon.sparkline([0, 0, 10, 10], width=2) == "▁█"  # bucket means 0 and 10
    assert mon.sparkline([1.0, float("inf"), 3.0]) == "▁×█"


def test_plot_writes_a_png(tmp_path: Path) -> None:
    t0 = 0.0
    lines = running_lines(t0) + [{"step": 10, "time": 51.0, "eval_loss": 1.2, "max_steps": 40}]
    out = write_run(tmp_path / "run", lines)
    png = tmp_path / "plots" / "loss.png"
    status, text = once(out, "--no_pid_check", "--plot", str(png))
    assert f"Plot written to {png}" in text
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 20_000  # three panels of curves, not an empty canvas
    with Image.open(png) as img:
        assert img.size == (1000, 800)
    assert mon.write_plot(write_run(tmp_path / "empty", []), tmp_path / "none.png") is None


def test_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = write_run(tmp_path / "run", running_lines(0.0), text_lines=30)
    assert mon.main(["--output_dir", str(out), "--tail", "5"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"==> last 5 line(s) of {out / 'train.log'} <=="] + [
        f"[t] line {i}" for i in range(25, 30)
    ]
    assert mon.tail_lines(out / "train.log", 100) == [f"[t] line {i}" for i in range(30)]
    assert mon.main(["--output_dir", str(tmp_path / "nope"), "--tail", "5"]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_gpu_lines_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    class Mem:
        used, total = 60 * 2**30, 80 * 2**30

    fake = types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=97 - h),
        nvmlDeviceGetMemoryInfo=lambda h: Mem(),
        nvmlDeviceGetTemperature=lambda h, kind: 64 + h,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    stats = mon.system_stats(cpu_interval=0.0)
    assert [(g.index, g.util_percent, g.temperature_c) for g in stats.gpus] == [
        (0, 97.0, 64.0),
        (1, 96.0, 65.0),
    ]
    snap = mon.Snapshot(output_dir="x", state=mon.WAITING, message="m", checked_at=0.0)
    text = mon.format_snapshot(snap, stats)
    assert "GPU 0 NVIDIA H100 80GB HBM3: util 97%   memory 60.0/80.0 GiB   temperature 64°C" in text
    assert "GPU 1 NVIDIA H100 80GB HBM3: util 96%   memory 60.0/80.0 GiB   temperature 65°C" in text


def test_cli_script_runs(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", running_lines(time.time() - 52.0))
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "monitor_training.py"),
            "--output_dir",
            str(out),
            "--once",
            "--no_pid_check",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "step 10/40 (25.0%)" in res.stdout and "Traceback" not in res.stderr


# ------------------------------------------------------------------------------ a real tiny training run
@pytest.fixture(scope="module")
def tiny_model(tiny_dir: Path) -> Path:
    """The session's tiny Qwen3-VL (tests/conftest.py)."""
    return tiny_dir


@pytest.mark.slow
def test_monitor_on_a_real_tiny_training_run(tmp_path: Path, tiny_model: Path) -> None:
    from data_conversion.converter import convert
    from data_conversion.make_demo_dataset import make_demo_dataset

    make_demo_dataset(tmp_path / "raw", seed=0, samples_per_split=4)
    convert(tmp_path / "raw", tmp_path / "converted", datasets=["retino"], splits=["train"], progress=False)
    out = tmp_path / "run"
    env = {**os.environ, "FLARE25_CONVERTED_DIR": str(tmp_path / "converted"), "HF_HUB_OFFLINE": "1"}
    env.pop("QWENVL_EXTRA_DATASETS", None)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
        "qwenvl/train/train_qwen.py", "--model_name_or_path", str(tiny_model), "--dataset_use", "flare_retino",
        "--output_dir", str(out), "--max_steps", "4", "--logging_steps", "1", "--report_to", "none",
        "--per_device_train_batch_size", "1", "--save_strategy", "no", "--learning_rate", "1e-3",
        "--dataloader_num_workers", "0",
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    jsonl = [json.loads(line) for line in (out / mon.TRAIN_LOG_JSONL).read_text().splitlines()]
    last_loss = [r["loss"] for r in jsonl if "loss" in r][-1]
    status, text = once(out)
    assert status == 0
    assert "step 4/4 (100.0%)" in text
    assert f"State: FINISHED - Finished at step 4/4; final loss {last_loss:.4f}" in text
    status, js = once(out, "--json")
    snap = json.loads(js)
    assert (snap["state"], snap["step"], snap["max_steps"], snap["loss"]) == ("finished", 4, 4, last_loss)
    assert [s for s, _ in snap["losses"]] == [1, 2, 3, 4]
    assert mon.write_plot(out, tmp_path / "run.png").read_bytes()[:8] == PNG_SIGNATURE
