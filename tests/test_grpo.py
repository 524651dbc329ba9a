"""GRPO (qwenvl/train/grpo.py): prompts, left padding, the vision keep-alive, per-task-type rewards, argument
checks; slow: 2 ranks under ZeRO-3 with an image-less rank, LoRA with exact resume, stock loading of a
checkpoint, and a learnable case whose reward rises."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qwenvl.train.arguments import ArgumentError

REPO = Path(__file__).resolve().parents[1]
GRPO = str(REPO / "qwenvl" / "train" / "grpo_qwen.py")


def _args(model: Path, out: Path, **overrides) -> list[str]:
    opts = {
        "model_name_or_path": str(model),
        "dataset_use": "flare_retino%50,flare_neojaundice%50",
        "output_dir": str(out),
        "max_steps": "2",
        "per_device_train_batch_size": "4",
        "num_generations": "2",
        "max_completion_length": "6",
        "learning_rate": "1e-3",
        "logging_steps": "1",
        "save_strategy": "no",
        "report_to": "none",
        "bf16": "False",
        "gradient_checkpointing": "False",
        "dataloader_num_workers": "0",
        "seed": "7",
        "data_seed": "7",
        "min_pixels": "1024",
        "max_pixels": "8192",
    }
    opts.update({k: str(v) for k, v in overrides.items()})
    return [x for k, v in opts.items() for x in (f"--{k}", v)]


def _recipe(model: Path, out: Path, **overrides):
    from qwenvl.train.grpo import GRPORecipe
    from qwenvl.train.grpo_arguments import parse_grpo_arguments

    recipe = GRPORecipe(parse_grpo_arguments(_args(model, out, **overrides)))
    recipe.setup()
    return recipe


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x]


def _steps(out: Path) -> dict[int, dict]:
    return {r["step"]: r for r in _log(out) if "loss" in r}


@pytest.fixture(scope="module")
def grpo_recipe(tiny_dir, demo_converted, tmp_path_factory):
    """One GRPO recipe on the tiny model over 1-image (retino) and 3-image (neojaundice) records."""
    import qwenvl.data as registry

    previous = os.environ.get("FLARE25_CONVERTED_DIR")
    os.environ["FLARE25_CONVERTED_DIR"] = str(demo_converted)
    registry.refresh_registry()
    try:
        yield _recipe(tiny_dir, tmp_path_factory.mktemp("grpo"))
    finally:
        if previous is None:
            os.environ.pop("FLARE25_CONVERTED_DIR", None)
        else:
            os.environ["FLARE25_CONVERTED_DIR"] = previous
        registry.refresh_registry()


# ----------------------------------------------------------------------------------------- arguments
def test_grpo_arguments_state_the_sampling_and_report_every_problem(tmp_path):
    from qwenvl.train.grpo_arguments import parse_grpo_arguments

    args = parse_grpo_arguments(["--dataset_use", "flare_retino", "--output_dir", str(tmp_path)])
    assert args.training.sampling() == {
        "num_generations": 4,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
        "max_completion_length": 128,
        "beta": 0.04,
        "loss_type": "dapo",
        "rollout_engine": "transformers generate",
    }
    assert args.rewards.iou_range() == (0.5, 0.5)
    with pytest.raises(ArgumentError) as e:
        parse_grpo_arguments(
            ["--dataset_use", "flare_retino", "--output_dir", str(tmp_path), "--use_vllm", "True"]
            + ["--eval_dataset_use", "flare_retino_val", "--format_reward_weight", "-1"]
            + ["--vision_tower_lr", "1e-5", "--reward_weights", "1", "1"]
        )
    text = str(e.value)
    for needle in (
        "--use_vllm",
        "--eval_dataset_use",
        "reward weights",
        "--vision_tower_lr",
        "--reward_weights",
    ):
        assert needle in text


# --------------------------------------------------------------------------------------------- prompts
def test_prompts_are_the_evaluation_prompts_with_reward_columns(grpo_recipe, demo_converted):
    from qwenvl.eval.generate import build_prompt

    dataset = grpo_recipe.train_dataset
    assert len(dataset) == 6  # 3 retino + 3 neojaundice (50 % of 6 each)
    assert dataset.report["task_types"] == {"classification": 6}
    counts = sorted({len(dataset[i]["images"]) for i in range(len(dataset))})
    assert counts == [1, 3]
    row = dataset[0]
    assert row["dataset"] == "flare_retino"
    record = json.loads((demo_converted / "retino_train.json").read_text())[row["index"]]
    assert set(row) == {
        "prompt",
        "images",
        "reference",
        "task_type",
        "question",
        "dataset",
        "index",
        "vocabulary",
    }
    assert row["reference"] == record["conversations"][1]["value"]
    # the dataset's answer vocabulary, as the converter recorded it: what the rewards score answers in
    assert json.loads(row["vocabulary"]) == {
        "kind": "letters",
        "separator": None,
        "case": "upper",
        "n_answers": 6,
        "n_other": 0,
    }
    assert grpo_recipe.run_info["answer_vocabulary"]["retino"]["classification"]["kind"] == "letters"
    assert row["question"] == record["meta"]["question"]
    rendered = grpo_recipe.processor.apply_chat_template(
        row["prompt"], tokenize=False, add_generation_prompt=True
    )
    assert rendered == build_prompt(record, grpo_recipe.processor)


def test_a_record_whose_reference_does_not_parse_is_dropped_and_reported(grpo_recipe, tmp_path):
    from qwenvl.data.dataset import SupervisedDataset
    from qwenvl.train.grpo import PromptSet

    good = {
        "conversations": [
            {"from": "human", "value": "Question: Which? Options: A: yes B: no"},
            {"from": "gpt", "value": "A"},
        ],
        "meta": {"task_type": "classification"},
    }
    bad = {
        "conversations": [{"from": "human", "value": "How many?"}, {"from": "gpt", "value": "several"}],
        "meta": {"task_type": "counting"},
    }
    unknown = {**good, "meta": {"task_type": "segmentation"}}
    checked = SupervisedDataset([good, bad, unknown], grpo_recipe.processor, 4096)
    prompts = PromptSet(checked)
    assert len(prompts) == 1 and prompts.rows[0]["reference"] == "A"
    assert prompts.report["total_kept"] == 1
    counts = prompts.report["datasets"]["records"]
    assert (counts["drawn"], counts["kept"], counts["dropped"]) == (3, 1, {"invalid_record": 2})
    details = [d["detail"] for d in prompts.report["dropped"]]
    assert "does not parse" in details[0] and "segmentation" in details[1]


# ------------------------------------------------------------------------------------------ positions
def _trl_batch(trainer, rows, completion_text="A<|im_end|>"):
    """What GRPOTrainer builds for a batch of dataset rows before its log-probability forward: left-padded
    prompt ids (its own padding), the processor's multimodal fields of the same prompts, and one fixed
    completion per row."""
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    prompts = [prepare_multimodal_messages(r["prompt"], images=r["images"]) for r in rows]
    prompt_ids, _, _ = trainer._tokenize_prompts(prompts)
    texts = [apply_chat_template({"prompt": p}, trainer.processing_class)["prompt"] for p in prompts]
    fields = trainer.processing_class(
        images=[r["images"] for r in rows], text=texts, padding=True, return_tensors="pt"
    )
    width = max(len(p) for p in prompt_ids)
    pad = trainer.processing_class.tokenizer.pad_token_id
    completion = trainer.processing_class.tokenizer.encode(completion_text, add_special_tokens=False)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) + completion for p in prompt_ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * (len(p) + len(completion)) for p in prompt_ids])
    mm = torch.cat(
        [fields["mm_token_type_ids"], torch.zeros(len(rows), len(completion), dtype=torch.long)], 1
    )
    return dict(
        input_ids=ids,
        attention_mask=mask,
        logits_to_keep=len(completion),
        pixel_values=fields["pixel_values"],
        image_grid_thw=fields["image_grid_thw"],
        num_images=[len(r["images"]) for r in rows],
        mm_token_type_ids=mm,
    )


def _logps(trainer, batch):
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, **batch)
    return logps


def test_mixed_one_and_three_image_prompts_get_the_positions_of_each_prompt_alone(grpo_recipe):
    """The left-padding trap: a 1-image and a 3-image prompt of different lengths in one batch. With the
    recipe's left padding every row's completion log-probabilities equal those of its prompt alone; with the
    processor padding on the right (TRL's prompt ids stay left-padded) the image-token map is shifted and the
    batch crashes or gets other values."""
    trainer = grpo_recipe.trainer
    dataset = grpo_recipe.train_dataset
    rows = [dataset[0], dataset[4]]  # retino (1 image), neojaundice (3 images)
    assert [len(r["images"]) for r in rows] == [1, 3]
    batch = _trl_batch(trainer, rows)
    widths = batch["attention_mask"].sum(1).tolist()
    assert widths[0] != widths[1]  # prompts of different lengths: one row is padded
    together = _logps(trainer, batch)
    for i, row in enumerate(rows):
        alone = _logps(trainer, _trl_batch(trainer, [row]))
        torch.testing.assert_close(together[i], alone[0], atol=2e-5, rtol=1e-4)

    tokenizer = trainer.processing_class.tokenizer
    tokenizer.padding_side = "right"
    try:
        try:
            wrong = _logps(trainer, _trl_batch(trainer, rows))
        except (RuntimeError, ValueError, IndexError):
            wrong = None
    finally:
        tokenizer.padding_side = "left"
    assert wrong is None or not torch.allclose(wrong, together, atol=1e-3)


def test_keep_alive_runs_the_vision_tower_and_changes_no_log_probability(grpo_recipe):
    """An image-less batch: with the keep-alive the vision tower runs once (the dummy image) and the
    completion log-probabilities are those without it."""
    trainer = grpo_recipe.trainer
    tokenizer = trainer.processing_class.tokenizer
    texts = ["Question: Is it benign? Options: A: yes B: no", "How many cells? Answer with a number only."]
    prompts = [
        tokenizer.encode(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
            ),
            add_special_tokens=False,
        )
        for t in texts
    ]
    completion = tokenizer.encode("B<|im_end|>", add_special_tokens=False)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p + completion for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * (len(p) + len(completion)) for p in prompts])
    calls = []
    hook = trainer._vision_tower(trainer.model).register_forward_hook(lambda *a: calls.append(1))
    try:
        batch = dict(input_ids=ids, attention_mask=mask, logits_to_keep=len(completion))
        trainer.vision_keep_alive = False
        plain = _logps(trainer, batch)
        assert calls == []
        trainer.vision_keep_alive = True
        kept = _logps(trainer, batch)
        assert calls == [1]
    finally:
        hook.remove()
    assert kept.shape == plain.shape == (2, len(completion))
    torch.testing.assert_close(kept, plain, atol=2e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- rewards
def test_rewards_are_logged_per_task_type(grpo_recipe):
    """Weighted reward 1.0 x answer + 0.2 x format, averaged per task type, on hand-computed completions."""
    trainer = grpo_recipe.trainer
    trainer.model.train()
    trainer._metrics["train"].clear()
    question = "Question: Which? Options: A: yes B: no"
    inputs = [
        {"task_type": "classification", "reference": "A", "question": question, "dataset": "x"},
        {"task_type": "classification", "reference": "A", "question": question, "dataset": "x"},
        {"task_type": "counting", "reference": "4", "question": "How many?", "dataset": "y"},
    ]
    completions = [[{"role": "assistant", "content": c}] for c in ("A", "maybe", "3")]
    rewards = trainer._calculate_rewards(inputs, [None] * 3, completions, [[1]] * 3)
    # counting: 1 / (1 + |3 - 4| / max(4, 1)) = 0.8
    torch.testing.assert_close(rewards, torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.8, 1.0]]))
    metrics = trainer._metrics["train"]
    assert metrics["reward_task/classification"] == [pytest.approx((1.2 + 0.0) / 2)]
    assert metrics["reward_task/counting"] == [pytest.approx(0.8 + 0.2)]
    assert metrics["answer_task/classification"] == [pytest.approx(0.5)]
    trainer._metrics["train"].clear()


def test_held_out_rewards_are_scored_and_summarised_per_task_type():
    """grpo_eval's scores (what scripts/demo_grpo.sh compares before and after GRPO) on hand-computed answers,
    and its one-line-per-task-type summary."""
    from qwenvl.train.grpo_eval import format_summary, score_answers

    def record(question: str, answer: str, task_type: str) -> dict:
        turns = [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]
        return {"image": "x.png", "conversations": turns, "meta": {"task_type": task_type}}

    records = [
        record("Benign or malignant? A. Benign, B. Malignant", "A", "classification"),
        record("Benign or malignant? A. Benign, B. Malignant", "B", "classification"),
        record("How many cells? Answer with an integer.", "10", "counting"),
    ]
    result = score_answers(records, ["A", "no idea", "5"])
    # classification: 1.2 and 0.0; counting: 1 / (1 + 5 / 10) = 2/3, + 0.2 format
    assert result["n"] == 3 and result["format"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["reward"] == pytest.approx((1.2 + 0.0 + 2 / 3 + 0.2) / 3, abs=1e-4)
    assert result["by_task_type"]["classification"] == {"n": 2, "reward": 0.6, "answer": 0.5, "format": 0.5}
    lines = format_summary({**result, "dataset_use": "demo_val"}).splitlines()
    assert len(lines) == 3 and lines[0].split()[:3] == ["demo_val", "3", "records"]
    assert "reward 0.6000" in lines[1] and lines[2].split()[0] == "counting"
    one_type = score_answers(records[:1], ["A"])
    assert format_summary(one_type).splitlines() == [
        "  all                             1 records   reward 1.2000   answer 1.0000   format 1.0000"
    ]


# ------------------------------------------------------------------------------------------------- slow
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


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_zero3_two_ranks_one_without_images_then_stock_loading(tiny_dir, demo_converted, tmp_path):
    """One torchrun launch, 2 ranks under ZeRO-3: rank 0's prompts have an image, rank 1's are text-only
    (prompt order fixed, 2 prompts per step), so rank 1 runs only through the keep-alive; 2 steps with
    rewards, KL and completion lengths in train_log.jsonl, a complete checkpoint-1, and a final model that
    loads in stock transformers (AutoModelForImageTextToText + AutoProcessor) and generates."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from qwenvl.flare.runfiles import CHECKPOINT_COMPLETE

    image_record = json.loads((demo_converted / "retino_train.json").read_text())[0]
    text_record = {
        "conversations": [
            {"from": "human", "value": "Question: Is the sky blue? Options: A: yes B: no"},
            {"from": "gpt", "value": "A"},
        ],
        "meta": {
            "task_type": "classification",
            "question": "Question: Is the sky blue? Options: A: yes B: no",
        },
    }
    (tmp_path / "img.json").write_text(json.dumps([image_record]))
    (tmp_path / "txt.json").write_text(json.dumps([text_record]))
    out = tmp_path / "z3"
    args = _args(
        tiny_dir,
        out,
        dataset_use=f"{tmp_path / 'img.json'},{tmp_path / 'txt.json'}",
        per_device_train_batch_size="2",
        shuffle_dataset="False",
        deepspeed=str(REPO / "configs" / "zero3.json"),
        save_strategy="steps",
        save_steps="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
    ]
    proc = subprocess.run(
        [*cmd, GRPO, *args], env=_env(demo_converted), capture_output=True, text=True, timeout=800, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    steps = _steps(out)
    assert sorted(steps) == [1, 2]
    for record in steps.values():
        for key in ("reward", "rewards/answer/mean", "rewards/format/mean", "kl", "completions/mean_length"):
            assert key in record, sorted(record)
        assert "reward_task/classification" in record
    assert (out / "checkpoint-1" / CHECKPOINT_COMPLETE).is_file()
    info = json.loads((out / "run_info.json").read_text())
    assert info["grpo"]["sampling"]["temperature"] == 0.7 and info["grpo"]["sampling"]["num_generations"] == 2

    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Is the sky blue? A: yes B: no"}]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert (
        generated.shape[1] == inputs["input_ids"].shape[1] + 3
        or generated.shape[1] > inputs["input_ids"].shape[1]
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lora_run_resumes_exactly(tiny_dir, demo_converted, tmp_path, registry_at):
    """LoRA (with the KL against the adapter-free model): 2 steps saving checkpoint-1; then from a copy
    holding only checkpoint-1, ``--resume_from_checkpoint auto`` logs step 2 with the same rewards, loss and
    KL as the uninterrupted run (the sampling RNG is restored with the checkpoint)."""
    registry_at(demo_converted)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    lora = dict(lora_enable="True", lora_r="8", lora_alpha="16", save_strategy="steps", save_steps="1")
    recipe = _recipe(tiny_dir, full, **lora)
    assert type(recipe.model).__name__.startswith("Peft")
    recipe.train()
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    again = _recipe(tiny_dir, resumed, resume_from_checkpoint="auto", **lora)
    again.train()
    first, second = _steps(full), _steps(resumed)
    assert sorted(second) == [2]
    for key in (
        "reward",
        "rewards/answer/mean",
        "rewards/format/mean",
        "loss",
        "kl",
        "completions/mean_length",
    ):
        assert second[2][key] == pytest.approx(first[2][key], rel=1e-5, abs=1e-7), key


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_reward_rises_on_a_learnable_case(tiny_dir, demo_converted, tmp_path, registry_at):
    """A short SFT teaches the tiny model the answer format on balanced benign/malignant records (CMMD: its
    letters come out about half right); GRPO on records whose answer is always A then raises the greedy
    reward on those records (train and validation), seeded."""
    from qwenvl.train.grpo_eval import evaluate_rewards
    from qwenvl.train.train_qwen import main as sft_main

    registry_at(demo_converted)
    sft = tmp_path / "sft"
    pixels = {"min_pixels": "1024", "max_pixels": "1024"}
    sft_args = _args(tiny_dir, sft, dataset_use="flare_cmmd", max_steps="24", learning_rate="1e-2", **pixels)
    drop = {"--num_generations", "--max_completion_length"}
    sft_args = [x for i, x in enumerate(sft_args) if x not in drop and sft_args[i - 1] not in drop]
    assert (
        sft_main([*sft_args, "--save_strategy", "steps", "--save_steps", "1000", "--tune_mm_vision", "True"])
        == 0
    )
    records = [
        r
        for split in ("train", "val")
        for r in json.loads((demo_converted / f"CMMD_{split}.json").read_text())
        if r["conversations"][1]["value"] == "A"
    ]
    assert len(records) == 6
    only_a = tmp_path / "cmmd_a.json"
    only_a.write_text(json.dumps(records))
    before = evaluate_rewards(str(sft), str(only_a), max_new_tokens=4)
    out = tmp_path / "grpo"
    recipe = _recipe(
        sft,
        out,
        dataset_use=str(only_a),
        max_steps="6",
        per_device_train_batch_size="8",
        num_generations="4",
        max_completion_length="2",
        learning_rate="5e-3",
        beta="0",  # no reference model: a quarter less per step; the KL term is tested elsewhere
        save_strategy="steps",
        save_steps="1000",
        **pixels,
    )
    recipe.train()
    after = evaluate_rewards(str(out), str(only_a), max_new_tokens=4)
    rewards = [_steps(out)[k]["reward"] for k in range(1, 7)]
    # Measured (seed 7): greedy 0.2 -> 1.2 (answer 0/6 -> 6/6), training rewards 0.25 0.70 0.80 1.20 1.07 1.20
    # (GRPO seeds 8 and 9: first three steps 0.88 / 0.37 -> last three 1.11 / 0.83, greedy 0.2 -> 1.2 each).
    assert before["format"] == 1.0  # the SFT model answers with a letter
    assert after["format"] == 1.0 and after["reward"] >= before["reward"] + 0.5
    assert sum(rewards[3:]) / 3 > sum(rewards[:3]) / 3 + 0.2
