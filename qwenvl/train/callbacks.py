"""Trainer callbacks: self-contained checkpoints, a clean stop on SIGTERM / Ctrl-C, and the run's live record."""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from transformers import TrainerCallback

from qwenvl.flare.jsonio import write_json_atomic
from qwenvl.flare.paths import REPO_ROOT
from qwenvl.flare.runfiles import (
    CHECKPOINT_COMPLETE,
    GENERATION_PREFIX,
    RUN_FILE,
    RUN_INFO,
    TRAIN_LOG_JSONL,
    TRAIN_LOG_TEXT,
)

logger = logging.getLogger(__name__)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "accelerate", "deepspeed", "peft", "flare25-qwen3vl"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def mark_checkpoint_complete(folder: str | Path, step: int) -> None:
    write_json_atomic(
        Path(folder) / CHECKPOINT_COMPLETE, {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    )


def enable_cache_in_saved_config(folder: str | Path) -> None:
    """Training runs with the KV cache off; a saved model is for inference, so its config.json (and its
    text_config) says ``use_cache: true``."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return  # e.g. LoRA adapters only
    config = json.loads(path.read_text())
    config["use_cache"] = True
    if isinstance(config.get("text_config"), dict):
        config["text_config"]["use_cache"] = True
    write_json_atomic(path, config)


class CheckpointFilesCallback(TrainerCallback):
    """Makes every checkpoint loadable on its own: the processor (with the trained pixel limits and the chat
    template) and ``run_info.json`` (resolved arguments, dataset mix with counts, seed, versions, git commit)
    are written beside the weights."""

    def __init__(self, processor, run_info: dict):
        self.processor = processor
        self.run_info = run_info

    def save_to(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.processor.save_pretrained(folder)
        write_json_atomic(folder / RUN_INFO, self.run_info, default=str)
        enable_cache_in_saved_config(folder)

    # A trainer that finalises its checkpoints itself (QwenVLTrainer.checkpoint_writers) sets this to True:
    # the files are then written before the completion marker, not after it.
    written_by_trainer = False

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and not self.written_by_trainer:
            self.save_to(Path(args.output_dir) / f"checkpoint-{state.global_step}")


class GracefulStopCallback(TrainerCallback):
    """On SIGTERM or SIGINT (Ctrl-C), finish the current optimizer step, save a checkpoint and stop.

    With several processes the stop flag is all-reduced (max) at every step end, so every rank stops at the
    same step and takes part in the same save, whichever ranks got the signal. A second signal more than
    ``REPEAT_WINDOW_S`` seconds after the first interrupts at once (Ctrl-C reaches a worker both from the
    terminal and from torchrun, a moment apart: that counts as one request)."""

    REPEAT_WINDOW_S = 5.0

    def __init__(self):
        self.requested: str | None = None
        self._requested_at = 0.0
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        if self.requested:
            if time.monotonic() - self._requested_at < self.REPEAT_WINDOW_S:
                return
            signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self._requested_at = time.monotonic()
        logger.warning("%s received: saving a checkpoint after this step, then stopping", self.requested)

    def _agreed(self, args) -> bool:
        """Whether any rank was asked to stop (every rank calls this at every step end)."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return bool(self.requested)
        flag = torch.tensor([1.0 if self.requested else 0.0], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed(args):
            if not self.requested:
                self.requested = "a stop request on another rank"
                logger.warning("%s: saving a checkpoint after this step, then stopping", self.requested)
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)


class RunRecordCallback(TrainerCallback):
    """The live record of a run, written by rank 0 into the output folder:

    - ``run.json``: total steps, start time, status, the run's arguments;
    - ``train_log.jsonl``: one JSON line per logging step (step, epoch, loss, learning rate, grad norm,
      samples/s, tokens/s, supervised tokens/s, elapsed seconds, memory) and per evaluation;
    - ``train.log``: the same, human-readable (``tail -f output/<run>/*.log``).

    A resumed run appends; lines for steps after the resumed checkpoint (written before the interruption)
    are dropped first, so no step appears twice. With ``echo`` each ``train.log`` line is printed too (the
    console's log when there is no progress bar).

    ``record_sets`` names the records of the evaluations during training (``{"eval": ..., "generation": ...}``,
    each :func:`qwenvl.flare.schema.describe_records`): ``run.json`` keeps them (``evaluation_records``), the
    start line states them, and every ``eval_loss`` line (``eval_records``) and generation-metrics line
    (``gen_records``) says which records it is on: converted records, not the organisers' headline.
    """

    def __init__(
        self, output_dir: str | Path, run_args: dict, echo: bool = False, record_sets: dict | None = None
    ):
        self.dir = Path(output_dir)
        self.run_args = run_args
        self.echo = echo
        self.record_sets = record_sets or {}
        self.t0 = time.time()
        self.last_time = self.t0
        self.last_step = 0
        self.last_samples = 0

    def _memory(self) -> dict:
        import psutil
        import torch

        mem = {
            "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if torch.cuda.is_available():
            mem["gpu_mem_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
            mem["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return mem

    def _update_run_file(self, **fields) -> None:
        path = self.dir / RUN_FILE
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(fields)
        write_json_atomic(path, current, default=str)

    def _append(self, record: dict, text: str) -> None:
        with open(self.dir / TRAIN_LOG_JSONL, "a") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.dir / TRAIN_LOG_TEXT, "a") as f:
            f.write(text + "\n")
        if self.echo:
            print(text, flush=True)

    def _truncate_after(self, step: int) -> None:
        path = self.dir / TRAIN_LOG_JSONL
        if not path.exists():
            return
        kept = [
            line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step
        ]
        path.write_text("".join(line + "\n" for line in kept))

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        resumed = state.global_step > 0
        if resumed:
            self._truncate_after(state.global_step)
        self.last_step = state.global_step
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        run_file = self.dir / RUN_FILE
        earlier = json.loads(run_file.read_text()) if resumed and run_file.exists() else {}
        self._update_run_file(
            status="running",
            max_steps=state.max_steps,
            num_train_epochs=args.num_train_epochs,
            start_time=earlier.get("start_time", now),
            resumed_at_step=state.global_step if resumed else None,
            pid=os.getpid(),
            hostname=platform.node(),
            argv=sys.argv,
            args=self.run_args,
            evaluation_records=self.record_sets,
        )
        verb = f"resumed at step {state.global_step}" if resumed else "started"
        named = [
            f"{what} on {self.record_sets[key]['text']}"
            for key, what in (("eval", "eval loss"), ("generation", "generation metrics"))
            if key in self.record_sets
        ]
        self._append(
            {"event": "start", "step": state.global_step, "time": time.time()},
            f"[{now}] run {verb}" + "".join(f"; {n}" for n in named),
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.time()
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "time": now}
        record["elapsed_s"] = round(now - self.t0, 2)
        record.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
        if "loss" in logs:
            dt = max(now - self.last_time, 1e-9)
            if "samples" in logs:
                record["samples_per_s"] = round(logs["samples"] / dt, 3)
            if "tokens" in logs:
                record["tokens_per_s"] = round(logs["tokens"] / dt, 1)
            if "supervised_tokens" in logs:
                record["supervised_tokens_per_s"] = round(logs["supervised_tokens"] / dt, 1)
            record.update(self._memory())
            self.last_time = now
        record["max_steps"] = state.max_steps
        parts = [f"step {state.global_step}/{state.max_steps}"]
        keys = ("loss", "eval_loss", "learning_rate", "grad_norm", "samples_per_s", "tokens_per_s")
        for key in keys + ("train_loss", "train_runtime"):
            if key in record:
                v = record[key]
                parts.append(f"{key} {v:.4g}" if isinstance(v, float) else f"{key} {v}")
        if "eval_loss" in record and "eval" in self.record_sets:
            record["eval_records"] = self.record_sets["eval"]["text"]
            parts.append(f"eval loss on {record['eval_records']}")
        generation = {k: v for k, v in record.items() if k.startswith(GENERATION_PREFIX + "all_")}
        if generation:
            parts += [f"{k} {v:.4g}" for k, v in generation.items()]
            if "generation" in self.record_sets:
                record["gen_records"] = self.record_sets["generation"]["text"]
                parts.append(f"generation metrics on {record['gen_records']}")
        if record.get("skipped_records"):
            parts.append(
                f"skipped records (empty batches so far {record.get('empty_batches', 0)}): "
                f"{record['skipped_records']}"
            )
        self._append(record, f"[{time.strftime('%Y-%m-%dT%H:%M:%S')}] " + " | ".join(parts))

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        finished = state.global_step >= state.max_steps
        status = "finished" if finished else "stopped"
        self._update_run_file(
            status=status, end_time=time.strftime("%Y-%m-%dT%H:%M:%S"), last_step=state.global_step
        )
        self._append(
            {"event": status, "step": state.global_step, "time": time.time()},
            f"[{time.strftime('%Y-%m-%dT%H:%M:%S')}] run {status} at step {state.global_step}",
        )
