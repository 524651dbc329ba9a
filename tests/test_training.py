"""train_qwen.py end to end on the tiny model: argument checks, freeze flags, per-group learning rates and the
schedule, per-token loss normalisation, ZeRO-3 CPU offload on two processes, resume, SIGTERM, the dry run."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qwenvl.train.arguments import ArgumentError, parse_arguments
from qwenvl.train.params import LLM, MERGER, VISION, parameter_group

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "qwenvl" / "train" / "train_qwen.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(converted: Path) -> dict:
    return {
        **os.environ,
        "FLARE25_CONVERTED_DIR": str(converted),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _base_args(model: Path, out: Path, **overrides) -> list[str]:
    opts = {
        "model_name_or_path": str(model),
        "dataset_use": "flare_retino,flare_busi_det,flare_neojaundice",
        "output_dir": str(out),
        "max_steps": "6",
        "per_device_train_batch_size": "1",
        "gradient_accumulation_steps": "2",
        "learning_rate": "2e-3",
        "logging_steps": "1",
        "save_strategy": "no",
        "report_to": "none",
        "bf16": "False",
        "dataloader_num_workers": "0",
        "seed": "7",
        "data_seed": "7",
        "min_pixels": "1024",
        "max_pixels": "16384",
    }
    opts.update({k: str(v) for k, v in overrides.items()})
    return [x for k, v in opts.items() for x in (f"--{k}", v)]


def _torchrun(
    args: list[str],
    converted: Path,
    nproc: int = 1,
    timeout: int = 600,
    extra_env: dict | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={_free_port()}",
        TRAIN,
        *args,
    ]
    env = {**_env(converted), **(extra_env or {})}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check:
        assert proc.returncode == 0, _failure_text(proc)
    return proc


_FAILURE_LINE = ("Traceback", "Error", "error:", "terminate called", "Signal ", "exitcode", "rank")


def _failure_text(proc: subprocess.CompletedProcess) -> str:
    """The tail of a failed launch's output, then every line of it that names a failure (a rank's traceback
    or abort can be thousands of characters above the launcher's summary), so that the end says why."""
    text = proc.stdout + proc.stderr
    named = [line for line in text.splitlines() if any(word in line for word in _FAILURE_LINE)]
    return text[-6000:] + "\n--- lines naming a failure:\n" + "\n".join(named[-60:])


def _first_step_loss(
    model: Path, dataset_use: str, batch_size: int, seed: int = 7, loss_normalisation: str = "token"
) -> float:
    """In process: the loss of the first optimizer step of a one-process run with ``batch_size`` samples per
    batch and no accumulation (the same data order and loss as train_qwen.py; the weights are not moved).
    The registry must point at the converted data (``registry_at``)."""
    import transformers

    from qwenvl.model import load_model
    from qwenvl.train.arguments import TrainingArguments
    from qwenvl.train.recipe import (
        build_collator,
        build_sft_trainer,
        load_training_datasets,
        load_training_processor,
    )

    transformers.set_seed(seed)
    processor = load_training_processor(str(model), 1024, 16384)
    dataset, _ = load_training_datasets(processor, dataset_use, 4096, seed)
    net = load_model(model, dtype="float32")
    net.config.use_cache = False
    args = TrainingArguments(
        output_dir=str(model / "unused"),
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=batch_size,
        seed=seed,
        data_seed=seed,
        max_steps=1,
        loss_normalisation=loss_normalisation,
    )
    trainer = build_sft_trainer(
        net, args, processor, dataset, build_collator(processor.tokenizer.pad_token_id, False)
    )
    batch = next(iter(trainer.get_train_dataloader()))
    net.train()
    with torch.no_grad():
        return float(trainer.compute_loss(net, batch))


def _assert_one_sgd_step(checkpoint: Path, model) -> None:
    """The checkpoint's weights are ``model``'s minus its accumulated gradients (one SGD step at lr 1), on a
    vision-merger and a language-model weight."""
    after = load_file(checkpoint / "model.safetensors")
    params = dict(model.named_parameters())
    for name in (
        "model.visual.merger.linear_fc2.weight",
        "model.language_model.layers.1.mlp.down_proj.weight",
    ):
        expected = params[name].detach() - params[name].grad
        torch.testing.assert_close(after[name], expected, rtol=1e-4, atol=1e-6)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line]


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _log(out) if "loss" in r}


# -------------------------------------------------------------------------------------------- arguments
def test_invalid_combinations_reported_together(tmp_path):
    argv = [
        "--model_name_or_path",
        str(tmp_path / "nowhere"),
        "--output_dir",
        str(tmp_path),
        "--dataset_use",
        "flare_retino",
        "--tune_mm_vision",
        "False",
        "--vision_tower_lr",
        "1e-6",
        "--min_pixels",
        "90000",
        "--max_pixels",
        "50176",
        "--eval_strategy",
        "steps",
        "--deepspeed",
        str(tmp_path / "missing.json"),
    ]
    with pytest.raises(ArgumentError) as e:
        parse_arguments(argv)
    msg = str(e.value)
    assert msg.startswith("5 problem(s)")
    for fragment in (
        "--tune_mm_vision True",
        "min_pixels 90000 is larger than max_pixels 50176; lower the minimum or raise the maximum",
        "--eval_dataset_use",
        "missing.json: no such file",
        "no config.json there",
    ):
        assert fragment in msg


def test_nothing_to_train_is_an_error(tmp_path):
    argv = [
        "--output_dir",
        str(tmp_path),
        "--dataset_use",
        "x",
        "--tune_mm_mlp",
        "False",
        "--tune_mm_llm",
        "False",
    ]
    with pytest.raises(ArgumentError, match="nothing to train"):
        parse_arguments(argv)


@pytest.mark.parametrize(
    "flag", [[], ["--gradient_checkpointing", "True"], ["--gradient_checkpointing", "False"]]
)
def test_both_modes_take_the_guides_checkpointing_flag_quietly_and_pin_memory_only_with_cuda(tmp_path, flag):
    """transformers 5.2x renamed the guide's flag and warns on every use of the old name; the arguments hand it
    on under the name this transformers reads (the SFT script passes it, GRPO's config defaults it to True).
    That the model then checkpoints: tests/test_compat.py."""
    import warnings

    from qwenvl.train.grpo_arguments import parse_grpo_arguments

    argv = ["--output_dir", str(tmp_path), "--dataset_use", "x", *flag]
    expected = {"True": True, "False": False}[flag[1]] if flag else None
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        sft = parse_arguments(argv).training
        grpo = parse_grpo_arguments(argv).training
    for args, default in ((sft, False), (grpo, True)):
        assert args.gradient_checkpointing is (default if expected is None else expected)
        # both names agree where this transformers has the new one (5.2x)
        assert (
            getattr(args, "activation_checkpointing", args.gradient_checkpointing)
            is args.gradient_checkpointing
        )
    # and both modes pin memory only with CUDA (GRPOConfig, first among the bases, would turn it on)
    assert sft.dataloader_pin_memory is grpo.dataloader_pin_memory is torch.cuda.is_available()


def test_a_learning_rate_for_a_frozen_part_is_an_error_in_both_modes(tmp_path):
    from qwenvl.train.grpo_arguments import parse_grpo_arguments

    argv = ["--output_dir", str(tmp_path), "--dataset_use", "x", "--tune_mm_vision", "False", "--tune_mm_mlp"]
    argv += ["False", "--vision_tower_lr", "1e-5", "--mm_projector_lr", "1e-5"]
    for parse in (parse_arguments, parse_grpo_arguments):
        with pytest.raises(ArgumentError) as error:
            parse(argv)
        assert "--vision_tower_lr is set but the vision tower is frozen" in str(error.value)
        assert "--mm_projector_lr is set but the mergers are frozen" in str(error.value)


def test_unknown_dataset_fails_before_the_model_loads(tiny_dir, demo_converted, tmp_path):
    args = _base_args(tiny_dir, tmp_path / "out", dataset_use="flare_retino,flare_nope")
    cmd = [sys.executable, TRAIN, *args]
    proc = subprocess.run(cmd, env=_env(demo_converted), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "unknown dataset 'flare_nope'" in proc.stderr and "Registered datasets:" in proc.stderr
    assert "Loading weights" not in proc.stderr + proc.stdout


def test_hub_id_offline_gives_a_clear_error(demo_converted, tmp_path):
    args = _base_args(Path("x"), tmp_path / "out")
    args[1] = "Qwen/Qwen3-VL-4B-Instruct"
    proc = subprocess.run(
        [sys.executable, TRAIN, *args], env=_env(demo_converted), capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "not in the local Hugging Face cache" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------- freeze flags, lrs, schedule
@pytest.fixture(scope="module")
def frozen_run(tiny_dir, demo_converted, tmp_path_factory):
    out = tmp_path_factory.mktemp("frozen")
    args = _base_args(
        tiny_dir,
        out,
        tune_mm_vision="False",
        tune_mm_mlp="True",
        tune_mm_llm="True",
        mm_projector_lr="4e-3",
        warmup_steps="2",
        lr_scheduler_type="cosine",
        save_strategy="steps",
        save_steps="3",
    )
    _torchrun(args, demo_converted)
    return out


def test_freeze_flags_keep_frozen_parameters_and_move_trained_ones(tiny_dir, frozen_run):
    before = load_file(tiny_dir / "model.safetensors")
    after = load_file(frozen_run / "model.safetensors")
    changed = {VISION: [], MERGER: [], LLM: []}  # per group: did each tensor change?
    for name, tensor in before.items():
        changed[parameter_group(name)].append(not torch.equal(tensor, after[name]))
    assert changed[VISION] and not any(changed[VISION])
    # The tiny LLM has 2 layers and deepstack feeds layers 0 and 1; features added after the LAST layer reach
    # only the visual positions' own outputs, which no supervised token reads, so deepstack merger 1 gets no
    # gradient. Every other merger tensor must move.
    live = [n for n in before if parameter_group(n) == MERGER and "deepstack_merger_list.1." not in n]
    assert live and all(not torch.equal(before[n], after[n]) for n in live)
    assert sum(changed[LLM]) >= len(changed[LLM]) - 2  # every LLM tensor moves (norms may barely)


def test_learning_rates_per_group_follow_warmup_and_cosine(frozen_run):
    records = [r for r in _log(frozen_run) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    total, warmup = 6, 2
    for r in records:
        step = r["step"] - 1  # lr used in the step = schedule value before it advanced
        if step < warmup:
            factor = step / warmup
        else:
            progress = (step - warmup) / (total - warmup)
            factor = 0.5 * (1 + math.cos(math.pi * progress))
        assert r["lr_llm"] == pytest.approx(2e-3 * factor, abs=1e-12)
        assert r["lr_merger"] == pytest.approx(4e-3 * factor, abs=1e-12)
        assert "lr_vision" not in r  # frozen: no optimizer group
        assert r["samples"] == 2 and 0 < r["supervised_tokens"] < r["tokens"]  # batch 1 x accumulation 2
        assert r["supervised_tokens_per_s"] > 0 and r["padding_share"] == 0.0
        assert r["learning_rate"] == pytest.approx(r["lr_merger"]) or r["learning_rate"] == pytest.approx(
            r["lr_llm"]
        )


def test_every_checkpoint_is_self_contained(frozen_run):
    for ckpt in ("checkpoint-3", "checkpoint-6"):
        folder = frozen_run / ckpt
        names = {p.name for p in folder.iterdir()}
        assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json"} <= names
        assert {"chat_template.jinja", "run_info.json", "trainer_state.json"} <= names
        info = json.loads((folder / "run_info.json").read_text())
        assert info["seed"] == 7
        assert info["arguments"]["data"]["max_pixels"] == 16384
        assert info["versions"]["transformers"]
        assert info["git_commit"]
        assert info["attn_implementation"] == "sdpa_packed"  # --attn_implementation auto on a CPU, recorded
        mix = info["datasets"]["train"]["datasets"]
        assert set(mix) == {"flare_retino", "flare_busi_det", "flare_neojaundice"}
        # the answer vocabulary of each option dataset trained on, as the converter recorded it
        letters = {"kind": "letters", "separator": None, "case": "upper", "n_answers": 6, "n_other": 0}
        assert info["answer_vocabulary"] == {
            "neojaundice": {"classification": letters},
            "retino": {"classification": letters},
        }
        assert all(v["kept"] == 6 for v in mix.values())
        proc = json.loads((folder / "processor_config.json").read_text())
        assert "16384" in json.dumps(proc)  # the trained pixel limit travels with the checkpoint
        # Inference settings in the saved config (training ran with the cache off), and the marker, written last.
        config = json.loads((folder / "config.json").read_text())
        assert config["use_cache"] is True and config["text_config"]["use_cache"] is True
        assert json.loads((folder / "checkpoint_complete.json").read_text())["step"] == int(
            ckpt.split("-")[1]
        )
    assert json.loads((frozen_run / "config.json").read_text())["text_config"]["use_cache"] is True


def test_auto_resume_takes_the_newest_complete_checkpoint(tmp_path, caplog):
    """A newer checkpoint without its marker (a process killed mid-save) is skipped and named in the log."""
    import logging

    from qwenvl.train.arguments import TrainingArguments
    from qwenvl.train.callbacks import mark_checkpoint_complete
    from qwenvl.train.recipe import resolve_resume

    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x")
    mark_checkpoint_complete(tmp_path / "checkpoint-2", 2)
    mark_checkpoint_complete(tmp_path / "checkpoint-4", 4)  # checkpoint-6 was being written when killed
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", resume_from_checkpoint="auto")
    with caplog.at_level(logging.INFO, logger="qwenvl.train.recipe"):
        assert resolve_resume(args) == str(tmp_path / "checkpoint-4")
    text = caplog.text
    assert "skipped incomplete checkpoint(s)" in text and str(tmp_path / "checkpoint-6") in text
    assert f"Resuming from {tmp_path / 'checkpoint-4'}" in text
    empty = tmp_path / "none"
    empty.mkdir()
    assert resolve_resume(TrainingArguments(output_dir=str(empty), resume_from_checkpoint="auto")) is None


# --------------------------------------------------------------------------- loss normalisation per token
def test_loss_is_normalised_per_supervised_token_across_accumulation(
    tiny_dir, demo_converted, tmp_path, registry_at
):
    """SGD with lr 1 and no clipping: the update equals minus the gradient of
    (sum of token losses over both micro-batches) / (their total supervised tokens)."""
    from qwenvl.data.collator import PaddedCollator, pop_stats
    from qwenvl.data.dataset import build_supervised_dataset
    from qwenvl.model import load_model, load_processor
    from qwenvl.train.trainer import causal_lm_loss

    registry_at(demo_converted)
    # Two records with different answer lengths: a detection answer (long) and a classification letter.
    args = _base_args(
        tiny_dir,
        tmp_path,
        dataset_use="flare_busi_det%17,flare_retino%17",
        max_steps="1",
        optim="sgd",
        learning_rate="1.0",
        weight_decay="0.0",
        max_grad_norm="0",
        lr_scheduler_type="constant",
        save_strategy="steps",
        save_steps="1",
        tune_mm_vision="False",
    )
    _torchrun(args, demo_converted)

    processor = load_processor(tiny_dir, min_pixels=1024, max_pixels=16384)
    ds = build_supervised_dataset("flare_busi_det%17,flare_retino%17", processor, 4096, seed=7)
    assert len(ds) == 2
    collate = PaddedCollator(pad_token_id=processor.tokenizer.pad_token_id)
    model = load_model(tiny_dir, dtype="float32")
    model.config.use_cache = False
    batches = [collate([ds[i]]) for i in range(2)]
    n_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    per_sample = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    assert per_sample[0] != per_sample[1]
    for b in batches:
        labels = b.pop("labels")
        pop_stats(b)
        loss = causal_lm_loss(model(**b), labels, num_items_in_batch=n_tokens)
        loss.backward()
    _assert_one_sgd_step(tmp_path / "checkpoint-1", model)


# ---------------------------------------------------------------------------- DeepSpeed ZeRO-3, 2 processes
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_zero3_cpu_offload_two_processes(tiny_dir, demo_converted, tmp_path, registry_at):
    """Two ranks under ZeRO-3 with CPU offload, in two launches:

    1. 8 steps, checkpoints at 4 and 8; rank 1 SIGKILLs itself in the save of step 8 (after writing its part,
       before the completion marker). Step 1's loss equals a one-process run with batch 2 (a missing or doubled
       rank scaling of the loss fails this); checkpoint-4 is complete, checkpoint-8 is not.
    2. ``--resume_from_checkpoint auto`` takes checkpoint-4, names the skipped checkpoint-8, and steps 5-8 repeat
       the losses of the first launch exactly; the final model reloads and generates."""
    from qwenvl.flare.runfiles import CHECKPOINT_COMPLETE
    from qwenvl.train.trainer import KILL_DURING_SAVE_ENV

    out = tmp_path / "ds"
    args = _base_args(
        tiny_dir,
        out,
        deepspeed=str(REPO / "configs" / "zero3_offload.json"),
        max_steps="8",
        gradient_accumulation_steps="1",
        learning_rate="3e-3",
        mm_projector_lr="6e-3",
        warmup_steps="1",
        save_strategy="steps",
        save_steps="4",
    )
    killed = _torchrun(
        args, demo_converted, nproc=2, timeout=900, extra_env={KILL_DURING_SAVE_ENV: "8:1"}, check=False
    )
    text = killed.stdout + killed.stderr
    assert killed.returncode != 0 and "killing rank 1 in the save of step 8" in text, text[-4000:]
    first = _losses(out)
    assert sorted(first) == list(range(1, 9)), text[-4000:]
    assert (out / "checkpoint-4" / CHECKPOINT_COMPLETE).is_file()
    assert (out / "checkpoint-8").is_dir() and not (out / "checkpoint-8" / CHECKPOINT_COMPLETE).exists()
    registry_at(demo_converted)
    one_process = _first_step_loss(tiny_dir, "flare_retino,flare_busi_det,flare_neojaundice", batch_size=2)
    assert first[1] == pytest.approx(one_process, rel=1e-5), (first[1], one_process)

    proc = _torchrun([*args, "--resume_from_checkpoint", "auto"], demo_converted, nproc=2, timeout=900)
    log = proc.stderr + proc.stdout
    assert f"Resuming from {out / 'checkpoint-4'}" in log
    assert "skipped incomplete checkpoint(s)" in log and str(out / "checkpoint-8") in log
    # The offloaded optimizer is DeepSpeed's CPU Adam, built from our named groups.
    assert "Optimizer: DeepSpeedCPUAdam with groups" in log and "merger lr=6.00e-03" in log
    losses = _losses(out)
    assert [r["step"] for r in _log(out) if "loss" in r] == list(range(1, 9))  # every step once
    for step in range(5, 9):
        assert losses[step] == pytest.approx(first[step], rel=1e-4), (step, losses, first)
    values = list(losses.values())
    assert all(math.isfinite(v) for v in values)
    assert sum(values[-3:]) / 3 < sum(values[:3]) / 3 - 0.5, values
    # Per-group learning rates survive DeepSpeed (no optimizer/scheduler block in the config).
    records = [r for r in _log(out) if "loss" in r]
    assert records[3]["lr_merger"] == pytest.approx(2 * records[3]["lr_llm"])
    assert records[0]["lr_llm"] == 0.0 and records[1]["lr_llm"] == pytest.approx(3e-3)
    for ckpt in ("checkpoint-4", "checkpoint-8"):
        assert (out / ckpt / "processor_config.json").is_file() and (out / ckpt / "run_info.json").is_file()
        assert (out / ckpt / CHECKPOINT_COMPLETE).is_file()
    # The gathered 16-bit save reloads in a fresh process with the Auto classes and generates.
    code = f"""
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained({str(out)!r})
proc = AutoProcessor.from_pretrained({str(out)!r})
msgs = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What is shown?"}}]}}]
text = proc.apply_chat_template(msgs, add_generation_prompt=True)
inputs = proc(text=[text], images=[Image.new("RGB", (64, 64), (200, 10, 10))], return_tensors="pt")
ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)
print("GENERATED", ids.shape[1] - inputs["input_ids"].shape[1], type(model).__name__)
"""
    gen = subprocess.run(
        [sys.executable, "-c", code], env=_env(demo_converted), capture_output=True, text=True
    )
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert "GENERATED" in gen.stdout and "Qwen3VLForConditionalGeneration" in gen.stdout
    assert int(gen.stdout.split()[1]) >= 1


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_zero3_lora_rank_without_images_runs_the_vision_tower_and_resumes(tiny_dir, demo_converted, tmp_path):
    """Half the records are text-only and a quarter have an image that fails to decode in the loop (batch 1: an
    all-failed micro-batch), LoRA on the LLM with the vision tower and the mergers frozen (issue: rank 0 aborted
    with gloo "collective mismatch"): under ZeRO-3 frozen parameters are partitioned too, so a rank whose
    micro-batch has no image must still take part in the vision tower's gathers, in training and in evaluation.
    Then the LoRA checkpoint of step 2 resumes (``auto``) and step 3 repeats the uninterrupted run's loss."""
    from qwenvl.flare.runfiles import CHECKPOINT_COMPLETE

    records = json.loads((demo_converted / "retino_train.json").read_text())
    mixed = []
    for i, rec in enumerate(records):
        if i % 2:
            human = rec["conversations"][0]["value"].replace("<image>\n", "")
            rec = {"conversations": [{"from": "human", "value": human}, rec["conversations"][1]]}
        elif i % 4 == 0:  # every other image record: a JPEG whose header reads but whose pixels do not decode
            jpeg = Path(rec["image"]).read_bytes()
            broken = tmp_path / f"broken_{i}.jpg"
            broken.write_bytes(jpeg[: len(jpeg) // 3])
            rec = {**rec, "image": str(broken)}
        mixed.append(rec)
    data = tmp_path / "mixed.json"
    data.write_text(json.dumps(mixed))
    out = tmp_path / "mixed_run"
    common = dict(
        dataset_use=str(data),
        deepspeed=str(REPO / "configs" / "zero3.json"),
        tune_mm_vision="False",
        tune_mm_mlp="False",
        lora_enable="True",
        lora_r="4",
        lora_alpha="8",
        lora_dropout="0.0",
        max_steps="3",
        gradient_accumulation_steps="1",
        lr_scheduler_type="constant",
        save_strategy="steps",
        save_steps="2",
    )
    evaluation = dict(
        eval_dataset_use=str(data), eval_strategy="steps", eval_steps="2", per_device_eval_batch_size="1"
    )
    _torchrun(_base_args(tiny_dir, out, **common, **evaluation), demo_converted, nproc=2, timeout=600)
    reference = _losses(out)
    assert sorted(reference) == [1, 2, 3] and all(math.isfinite(v) for v in reference.values())
    evals = {r["step"]: r["eval_loss"] for r in _log(out) if "eval_loss" in r}
    # each eval line names its records (the recipe's record_sets: the kept records of --eval_dataset_use;
    # the text-only half has no meta, so the split and folder of those are unknown)
    named = {r["eval_records"] for r in _log(out) if "eval_loss" in r}
    assert named == {"6 records of split train, unknown (training 3, unknown folder 3), 2 datasets"}
    assert sorted(evals) == [2, 3] and all(
        math.isfinite(v) for v in evals.values()
    )  # every 2 steps and at the end
    report = json.loads((out / "dataset_report.json").read_text())["train"]
    assert report["total_kept"] == len(
        mixed
    )  # the broken images pass the header check: they fail in the loop
    # a micro-batch whose only record failed (batch 1) met the other rank's batch without it, and nothing hung:
    # the failed records are named with file and index in the run log, and counted as empty micro-batches
    failed = [r for r in _log(out) if "loss" in r and "broken_" in r.get("skipped_records", "")]
    assert failed and all(r["empty_batches"] >= 1 for r in failed), _log(out)
    assert all(f"({data})" in r["skipped_records"] for r in failed)
    ckpt = out / "checkpoint-2"
    assert (ckpt / "adapter_model.safetensors").is_file() and (ckpt / CHECKPOINT_COMPLETE).is_file()

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(ckpt, resumed / "checkpoint-2")
    proc = _torchrun(
        _base_args(tiny_dir, resumed, resume_from_checkpoint="auto", **common),
        demo_converted,
        nproc=2,
        timeout=600,
    )
    assert f"Resuming from {resumed / 'checkpoint-2'}" in proc.stderr + proc.stdout
    again = _losses(resumed)
    assert sorted(again) == [3]
    assert again[3] == pytest.approx(reference[3], rel=1e-4), (again, reference)


def test_dummy_image_for_text_only_batches_leaves_the_loss_unchanged(tiny_dir, tmp_path):
    """The keep-alive image is appended after the last real token of every image-less micro-batch, in training
    and evaluation, vision side trainable or frozen (ZeRO-3 partitions frozen parameters too): same loss, same
    LLM gradients, and the vision tower took part (a zero gradient when trainable)."""
    from qwenvl.data.collator import PaddedCollator
    from qwenvl.data.processing import encode_record
    from qwenvl.model import load_model, load_processor
    from qwenvl.train.arguments import TrainingArguments
    from qwenvl.train.trainer import QwenVLTrainer

    processor = load_processor(tiny_dir, min_pixels=1024, max_pixels=16384)
    records = [
        {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        for q, a in [("What is 2+2?", "4"), ("Name a colour of the sky on a clear day.", "blue, mostly")]
    ]
    batch = PaddedCollator(processor.tokenizer.pad_token_id)(
        [encode_record(r, processor, []) for r in records]
    )
    model = load_model(tiny_dir, dtype="float32")
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = QwenVLTrainer(model=model, args=args, processing_class=processor)
    llm_weight = model.model.language_model.layers[1].mlp.down_proj.weight

    def loss_of(keep_alive: bool, tune_vision: bool, training: bool):
        model.train(training)
        trainer.vision_keep_alive = keep_alive
        for p in model.model.visual.parameters():
            p.requires_grad_(tune_vision)
        model.zero_grad()
        inputs = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
        loss = trainer.compute_loss(model, inputs)
        if training:
            loss.backward()
        grad = llm_weight.grad.clone() if training else None
        return loss.detach(), grad, "pixel_values" in inputs

    for tune_vision in (False, True):
        for training in (True, False):
            plain, plain_grad, had_image = loss_of(False, tune_vision, training)
            assert not had_image
            with_dummy, grad, had_image = loss_of(True, tune_vision, training)
            assert had_image, (tune_vision, training)
            torch.testing.assert_close(with_dummy, plain, rtol=0, atol=1e-6)
            if training:
                torch.testing.assert_close(grad, plain_grad, rtol=1e-5, atol=1e-8)
            if tune_vision and training:
                vgrad = model.model.visual.patch_embed.proj.weight.grad
                assert vgrad is not None and torch.count_nonzero(vgrad) == 0

    # A micro-batch whose every item was skipped: a forward (with the dummy image), zero loss, zero gradient.
    empty = PaddedCollator(processor.tokenizer.pad_token_id)([None])
    model.train()
    model.zero_grad()
    loss = trainer.compute_loss(model, empty)
    loss.backward()
    assert loss.item() == 0.0 and "pixel_values" in empty
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.parameters())
    assert trainer.batch_stats["num_empty_batches"] == 1


def test_loss_projects_only_each_rows_supervised_positions(tiny_dir, tmp_path):
    """A padded batch whose rows' answers sit at different positions: the vocabulary projection sees exactly
    the supervised (row, position) pairs (not every row at every row's answer positions), and the loss and
    gradients equal the plain causal LM loss over full logits."""
    from qwenvl.data.collator import PaddedCollator
    from qwenvl.data.processing import encode_record
    from qwenvl.model import load_model, load_processor
    from qwenvl.train.arguments import TrainingArguments
    from qwenvl.train.trainer import QwenVLTrainer, causal_lm_loss

    processor = load_processor(tiny_dir, min_pixels=1024, max_pixels=16384)
    records = [
        {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        for q, a in [
            ("Short?", "[[1, 2, 3, 4], [5, 6, 7, 8]]"),
            ("A much longer question, so that this row's answer starts later in the padded batch?", "B"),
        ]
    ]
    batch = PaddedCollator(processor.tokenizer.pad_token_id)(
        [encode_record(r, processor, []) for r in records]
    )
    supervised = batch["labels"][:, 1:] != -100
    per_row = supervised.sum(dim=1).tolist()
    union = int(supervised.any(dim=0).sum())
    # The positions supervised in any row, for every row, would be 2 x 25 logits instead of 25 + 2.
    assert per_row == [25, 2] and union == 25
    model = load_model(tiny_dir, dtype="float32")
    trainer = QwenVLTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True),
        processing_class=processor,
    )
    trainer.vision_keep_alive = False
    weight = model.model.language_model.layers[0].self_attn.q_proj.weight

    inputs = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
    loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True)
    loss.backward()
    grad = weight.grad.clone()
    assert tuple(outputs.logits.shape) == (1, sum(per_row), model.config.text_config.vocab_size)

    model.zero_grad()
    plain = {k: v for k, v in batch.items() if k != "labels" and not k.startswith("stat_")}
    reference = causal_lm_loss(model(**plain), batch["labels"])
    reference.backward()
    torch.testing.assert_close(loss.detach(), reference.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, weight.grad, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------------------------- resume
def test_resume_from_a_middle_checkpoint_reproduces_the_uninterrupted_run(tiny_dir, demo_converted, tmp_path):
    full = tmp_path / "full"
    args = dict(save_strategy="steps", save_steps="3", max_steps="6", warmup_steps="1")
    _torchrun(_base_args(tiny_dir, full, **args), demo_converted)
    reference = _losses(full)

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    # The record as an interrupted run would have left it: steps 1-5 written, checkpoint at 3.
    lines = (full / "train_log.jsonl").read_text().splitlines()
    kept = [
        line for line in lines if json.loads(line).get("step", 0) <= 5 and "event" not in json.loads(line)
    ]
    (resumed / "train_log.jsonl").write_text("\n".join(kept) + "\n")
    shutil.copy(full / "run.json", resumed / "run.json")
    resume = _base_args(tiny_dir, resumed, resume_from_checkpoint="auto", disable_tqdm="True", **args)
    proc = _torchrun(resume, demo_converted)
    assert "Resuming from" in proc.stderr + proc.stdout and "checkpoint-3" in proc.stderr + proc.stdout
    # No progress bar: the console shows train.log's lines, not the Trainer's dicts.
    shown = [line.split("] ", 1)[1] for line in proc.stdout.splitlines() if "] step " in line]
    assert [line.split(" | ")[:2] for line in shown[:3]] == [
        [f"step {s}/6", f"loss {reference[s]:.4g}"] for s in (4, 5, 6)
    ]
    assert "{'loss'" not in proc.stdout

    again = _losses(resumed)
    steps = [r["step"] for r in _log(resumed) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # no step lost or duplicated in the record
    for step in (4, 5, 6):
        assert again[step] == pytest.approx(reference[step], rel=1e-5), (again, reference)
    assert json.loads((resumed / "run.json").read_text())["resumed_at_step"] == 3


# ------------------------------------------------------------------------------------------------ SIGTERM
def test_sigterm_saves_a_checkpoint_and_stops_cleanly(tiny_dir, demo_converted, tmp_path):
    out = tmp_path / "stop"
    args = _base_args(tiny_dir, out, max_steps="400", save_strategy="steps", save_steps="1000")
    cmd = [sys.executable, TRAIN, *args]
    proc = subprocess.Popen(
        cmd, env=_env(demo_converted), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 240
    log = out / "train_log.jsonl"
    while time.time() < deadline and not (log.exists() and len(_losses(out)) >= 2):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-3000:]
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1, output[-2000:]
    step = int(checkpoints[0].name.split("-")[1])
    assert 2 <= step < 400
    assert (checkpoints[0] / "processor_config.json").is_file()
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"
    assert "SIGTERM received" in output


# ------------------------------------------------------------------------------------------------ dry run
_EXIT_PROBE = """
import atexit, sys
from qwenvl.train.recipe import exit_process
class Finalized:
    def __del__(self):
        print(" finalized", flush=True)
keep = Finalized()
atexit.register(lambda: print(" at-exit ran"))
print("buffered", end="")
exit_process(int(sys.argv[1]))
"""


@pytest.mark.parametrize(
    "world_size, status, finalized",
    [("2", 0, False), ("2", 3, True), ("1", 0, True)],
)
def test_a_finished_rank_leaves_without_the_interpreters_finalization(world_size, status, finalized):
    """One of several processes whose run finished: at-exit functions run and buffered output is written,
    but objects are not finalized (where gloo's C++ threads aborted a finished rank); a failed run, or a
    single process, ends as Python ends, with its status."""
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    if world_size:
        env["WORLD_SIZE"] = world_size
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_PROBE, str(status)], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == status, proc.stderr
    assert "buffered at-exit ran\n" in proc.stdout, proc.stdout
    assert ("finalized" in proc.stdout) == finalized, proc.stdout


def test_dry_run_script_prints_losses_and_leaves_nothing(tiny_dir, demo_converted, tmp_path):
    env = {
        **_env(demo_converted),
        "MODEL_PATH": str(tiny_dir),
        "DEEPSPEED": "none",
        "GRAD_ACCUM": "1",
        "DATALOADER_WORKERS": "0",
        "MIN_PIXELS": "1024",
        "MAX_PIXELS": "16384",
        "SKIP_SYNC": "1",
        "TMPDIR": str(tmp_path),
    }
    proc = subprocess.run(
        ["bash", "scripts/dry_run.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Qwen3-VL finetune" in out and "CPU only" in out  # the script says what it is about to do
    assert [f"step    {i}" in out for i in range(1, 6)] == [True] * 5
    assert "peak RSS" in out and "all steps finite" in out
    assert "qwen3vl_dry_run." in out
    assert list(tmp_path.glob("qwen3vl_dry_run.*")) == []  # the run folder is gone: no checkpoint left behind
    assert list(tmp_path.rglob("checkpoint-*")) == []


def test_dry_run_summary_fails_on_nan(tmp_path):
    from qwenvl.train.dry_run import summarize

    rows = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": float("nan")}]
    (tmp_path / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ok, text = summarize(tmp_path, expected_steps=2)
    assert not ok and "NaN or infinite at steps [2]" in text
    ok, text = summarize(tmp_path, expected_steps=3)
    assert "only 2 of 3 steps" in text


def test_grpo_dry_run_summary_adds_each_steps_rewards(tmp_path, capsys):
    from qwenvl.train.grpo_dry_run import main

    rows = [
        {"step": 1, "loss": 0.5, "reward": 0.7, "kl": 0.01, "reward_task/classification": 0.7},
        {"step": 2, "loss": 0.25, "reward": 0.9},
    ]
    (tmp_path / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main([str(tmp_path), "--expected_steps", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  all steps finite: ready for full training" in out
    assert out[-3:] == [
        "GRPO rewards per step:",
        "  step    1  reward 0.7  kl 0.01  reward_task/classification 0.7",
        "  step    2  reward 0.9",
    ]
    assert main([str(tmp_path)]) == 1  # 3 steps expected by default


# --------------------------------------------------------------------------- a micro-batch with no sample left
def test_batch_whose_every_item_failed_contributes_nothing_and_is_named(tiny_dir, demo_converted, tmp_path):
    """Batch 1: a JPEG that passes the header check but is truncated after conversion fails to decode inside the
    loop. Its micro-batch gives a zero loss and no gradient: with 2 records x accumulation 2 each step holds both,
    so every step equals a run on the good record alone; the failed record is named in the run's records."""
    records = json.loads((demo_converted / "retino_train.json").read_text())
    broken = tmp_path / "broken.jpg"
    data = Path(records[1]["image"]).read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # the header reads, the pixels do not decode
    bad = {**records[1], "image": str(broken)}
    both, alone = tmp_path / "both.json", tmp_path / "alone.json"
    both.write_text(json.dumps([records[0], bad]))
    alone.write_text(json.dumps([records[0]]))
    common = dict(max_steps="2", lr_scheduler_type="constant", per_device_train_batch_size="1")
    with_bad, reference = tmp_path / "with_bad", tmp_path / "reference"
    _torchrun(
        _base_args(tiny_dir, with_bad, dataset_use=str(both), gradient_accumulation_steps="2", **common),
        demo_converted,
    )
    _torchrun(
        _base_args(tiny_dir, reference, dataset_use=str(alone), gradient_accumulation_steps="1", **common),
        demo_converted,
    )
    assert json.loads((with_bad / "dataset_report.json").read_text())["train"]["total_kept"] == 2
    got, want = _losses(with_bad), _losses(reference)
    assert sorted(got) == [1, 2] and all(math.isfinite(v) and v > 0 for v in got.values())
    for step in (1, 2):
        assert got[step] == pytest.approx(want[step], rel=1e-5), (got, want)
    records_logged = [r for r in _log(with_bad) if "loss" in r]
    assert [r["empty_batches"] for r in records_logged] == [1, 2]
    for r in records_logged:
        assert f"record 1 ({both})" in r["skipped_records"] and str(broken) in r["skipped_records"]
    text = (with_bad / "train.log").read_text()
    assert text.count(f"record 1 ({both})") == 2


def test_step_whose_every_micro_batch_failed_leaves_the_weights_alone(
    tiny_dir, demo_converted, tmp_path, registry_at
):
    """In process, batch 1: step 2's only record is an image that fails to decode. AdamW with weight decay and
    momentum from step 1 would still move every weight; the step is skipped instead (weights bit-identical,
    the optimizer's step count not advanced), counted (skipped_steps) and its record named in the run log."""
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback

    from qwenvl.data.collator import PaddedCollator
    from qwenvl.data.dataset import build_supervised_dataset
    from qwenvl.model import load_model, load_processor
    from qwenvl.train.arguments import TrainingArguments
    from qwenvl.train.callbacks import RunRecordCallback
    from qwenvl.train.trainer import QwenVLTrainer

    registry_at(demo_converted)
    records = json.loads((demo_converted / "retino_train.json").read_text())
    broken = tmp_path / "broken.jpg"
    jpeg = Path(records[1]["image"]).read_bytes()
    broken.write_bytes(jpeg[: len(jpeg) // 3])  # the header reads, the pixels do not decode
    data = tmp_path / "data.json"
    data.write_text(json.dumps([records[0], {**records[1], "image": str(broken)}, records[2]]))
    processor = load_processor(tiny_dir, min_pixels=1024, max_pixels=16384)
    ds = build_supervised_dataset(str(data), processor, 4096, seed=7)
    ds.skip_markers = True
    order = sorted(range(len(ds)), key=lambda i: ds.samples[i].source["index"])  # records 0, 1 (bad), 2

    class Snapshots(TrainerCallback):
        weights: list[dict[str, torch.Tensor]] = []

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.weights.append({n: p.detach().clone() for n, p in model.named_parameters()})

    model = load_model(tiny_dir, dtype="float32")
    model.config.use_cache = False
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = tmp_path / "run"
    args = TrainingArguments(
        output_dir=str(out),
        report_to="none",
        use_cpu=True,
        max_steps=3,
        per_device_train_batch_size=1,
        learning_rate=1e-2,
        weight_decay=0.1,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
    )
    trainer = QwenVLTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=PaddedCollator(processor.tokenizer.pad_token_id),
        processing_class=processor,
        callbacks=[Snapshots(), RunRecordCallback(out, {})],
    )
    trainer._get_train_sampler = lambda *a, **k: SequentialSampler(order)
    trainer.train()

    after = Snapshots.weights
    assert len(after) == 3
    moved = [sum(not torch.equal(a[n], b[n]) for n in before) for a, b in zip([before, *after], after)]
    assert moved[0] > 0 and moved[2] > 0, moved  # steps 1 and 3 train
    assert moved[1] == 0, moved  # step 2 leaves every weight bit-identical
    adam_steps = {int(s["step"]) for s in trainer.optimizer.state.values() if "step" in s}
    assert adam_steps == {2}  # steps 1 and 3 only
    steps = {r["step"]: r for r in _log(out) if "loss" in r}
    assert sorted(steps) == [1, 2, 3]
    assert [steps[s]["skipped_steps"] for s in (1, 2, 3)] == [0, 1, 1]
    assert [steps[s]["empty_batches"] for s in (1, 2, 3)] == [0, 1, 1]
    assert steps[2]["loss"] == 0.0 and steps[1]["loss"] > 0 and steps[3]["loss"] > 0
    named = steps[2]["skipped_records"]
    assert f"record 1 ({data})" in named and str(broken) in named
    assert "skipped_records" not in steps[1] and "skipped_records" not in steps[3]
