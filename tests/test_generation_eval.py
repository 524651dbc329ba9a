"""Generation metrics during training (qwenvl/eval/callback.py): the fixed validation subset, the ZeRO-3 shard
plan, the logged metric names, and the callback inside a real Trainer run, format-constrained like evaluation,
with the run's log and the monitor naming the records of the eval loss and of the generation metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwenvl.eval.callback import (
    GenerationEvalCallback,
    flatten_metrics,
    generation_eval_records,
    shard_plan,
)
from qwenvl.eval.evaluate import load_eval_records, registry_names_for
from qwenvl.eval.generate import load_for_generation
from qwenvl.flare.runfiles import RUN_FILE, TRAIN_LOG_JSONL, TRAIN_LOG_TEXT
from qwenvl.flare.schema import describe_records
from qwenvl.tools.monitor import format_snapshot, take_snapshot


def _val(registry_at, converted: Path, names: list[str]) -> list[dict]:
    registry_at(converted)
    return load_eval_records(registry_names_for(names, "val"))


@pytest.fixture(scope="module")
def tiny_generation(tiny_dir):
    """The untrained tiny model on the CPU, with a 16-token pixel budget."""
    return load_for_generation(tiny_dir, min_pixels=1024, max_pixels=16384, device="cpu")


def test_shard_plan_gives_every_rank_the_same_number_of_calls(registry_at, demo_converted):
    records = _val(registry_at, demo_converted, ["retino", "BUSI-det"])[:9]  # 6 classification, 3 detection
    budgets = {"classification": 16, "detection": 256}
    plans = [shard_plan(records, rank, 2, lambda r: budgets[r["meta"]["task_type"]]) for rank in range(2)]
    assert [len(p) for p in plans] == [5, 5]  # 3 + 2 per rank, one padding slot on rank 1
    kept = sorted(i for p in plans for i, keep in p if keep)
    assert kept == list(range(9))
    assert [(i, keep) for i, keep in plans[1] if not keep] == [(6, False)]


def test_flatten_metrics_names():
    metrics = {
        "by_task": {"classification": {"balanced_accuracy": 0.5, "n_unparsable": 1}},
        "by_dataset": {
            "retino": {"task_type": "classification", "balanced_accuracy": 0.5},
            "iugc/regression": {"task_type": "regression", "mae": None},
        },
    }
    assert flatten_metrics(metrics) == {
        "gen_all_classification_balanced_accuracy": 0.5,
        "gen_retino_balanced_accuracy": 0.5,
        "gen_n_unparsable": 1.0,
    }


def test_generation_eval_callback_logs_every_n_steps(registry_at, demo_converted, tiny_generation, tmp_path):
    from transformers import TrainerControl, TrainerState

    registry_at(demo_converted)
    records = generation_eval_records("flare_retino%50,flare_busi_det", "", 2)
    assert [r["meta"]["dataset"] for r in records] == ["retino", "retino", "BUSI-det", "BUSI-det"]
    logged: list[dict] = []
    callback = GenerationEvalCallback(
        records, tiny_generation.processor, eval_steps=2, log_fn=logged.append, max_new_tokens=2
    )
    args = type("Args", (), {"output_dir": str(tmp_path)})()
    callback.on_step_end(args, TrainerState(global_step=1), TrainerControl(), model=tiny_generation.model)
    assert logged == []
    callback.on_step_end(args, TrainerState(global_step=2), TrainerControl(), model=tiny_generation.model)
    assert len(logged) == 1
    assert {"gen_retino_balanced_accuracy", "gen_BUSI-det_f1", "gen_n_unparsable", "gen_seconds"} <= set(
        logged[0]
    )
    assert logged[0]["gen_n_unparsable"] == 0.0  # constrained, like evaluation: the untrained model parses
    detail = json.loads((tmp_path / "generation_eval" / "step-2.json").read_text())
    assert len(detail["outputs"]) == 4 and detail["metrics"]["n_gt"] == 4
    with pytest.raises(ValueError, match="labelled validation data"):
        generation_eval_records("flare_no_such_dataset", "", 2)


def test_generation_eval_callback_inside_a_trainer_run(registry_at, demo_converted, tiny_dir, tmp_path):
    """The wiring the lead adds to train_qwen.py: metrics reach trainer.log, training goes on afterwards."""
    from transformers import TrainingArguments

    from qwenvl.data.collator import PaddedCollator
    from qwenvl.data.dataset import build_supervised_dataset
    from qwenvl.model import load_model, load_processor
    from qwenvl.train.trainer import QwenVLTrainer

    registry_at(demo_converted)
    processor = load_processor(tiny_dir, min_pixels=1024, max_pixels=16384)
    train = build_supervised_dataset("flare_retino", processor, 4096, seed=0)
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, learning_rate=1e-3,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, remove_unused_columns=False,
        dataloader_num_workers=0,
    )  # fmt: skip
    model = load_model(tiny_dir, dtype="float32")
    trainer = QwenVLTrainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=PaddedCollator(processor.tokenizer.pad_token_id),
    )
    records = generation_eval_records("flare_retino", "", 3)
    callback = GenerationEvalCallback(records, processor, eval_steps=2, log_fn=trainer.log, max_new_tokens=2)
    trainer.add_callback(callback)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "gen_retino_balanced_accuracy" in entry]
    assert [entry["step"] for entry in logged] == [2, 4]
    assert sum("loss" in entry for entry in trainer.state.log_history) == 4  # training went on
    assert model.training
    assert sorted(p.name for p in (tmp_path / "generation_eval").iterdir()) == ["step-2.json", "step-4.json"]


def test_the_run_log_and_the_monitor_name_the_records_of_each_evaluation(
    registry_at, demo_converted, tiny_dir, tmp_path
):
    """The eval loss (on --eval_dataset_use) and the generation metrics say which records they are on, in
    train_log.jsonl, train.log, run.json and the monitor: converted records, not an evaluation's headline."""
    from transformers import TrainingArguments

    from qwenvl.data.collator import PaddedCollator
    from qwenvl.data.dataset import build_supervised_dataset
    from qwenvl.model import load_model, load_processor
    from qwenvl.train.callbacks import RunRecordCallback
    from qwenvl.train.trainer import QwenVLTrainer

    registry_at(demo_converted)
    processor = load_processor(tiny_dir, min_pixels=1024, max_pixels=16384)
    train = build_supervised_dataset("flare_retino", processor, 4096, seed=0)
    evaluation = build_supervised_dataset("flare_retino_val,flare_bone_marrow_val", processor, 4096, seed=0)
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, learning_rate=1e-3,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, remove_unused_columns=False,
        dataloader_num_workers=0, eval_strategy="steps", eval_steps=3, per_device_eval_batch_size=4,
    )  # fmt: skip
    model = load_model(tiny_dir, dtype="float32")
    trainer = QwenVLTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=PaddedCollator(processor.tokenizer.pad_token_id),
    )
    records = generation_eval_records("flare_retino", "", 3)
    callback = GenerationEvalCallback(records, processor, eval_steps=2, log_fn=trainer.log, max_new_tokens=2)
    trainer.add_callback(callback)
    # the run's log names what each evaluation is on, as the recipe wires it (TrainingRecipe.record_sets)
    named = {
        "eval": describe_records([s.record for s in evaluation.samples]),
        "generation": callback.record_set,
    }
    trainer.add_callback(RunRecordCallback(tmp_path, {}, record_sets=named))
    trainer.train()
    eval_text = "12 converted records of split val (validation-public 12), 2 datasets"
    gen_text = "3 converted records of split val (validation-public 3), 1 dataset"
    assert (named["eval"]["text"], named["generation"]["text"]) == (eval_text, gen_text)
    assert named["eval"]["datasets"] == {"retino": 6, "bone_marrow": 6}
    lines = [json.loads(line) for line in (tmp_path / TRAIN_LOG_JSONL).read_text().splitlines()]
    assert [(r["step"], r["eval_records"]) for r in lines if "eval_loss" in r] == [
        (3, eval_text),
        (4, eval_text),
    ]
    assert [(r["step"], r["gen_records"]) for r in lines if "gen_records" in r] == [
        (2, gen_text),
        (4, gen_text),
    ]
    text = (tmp_path / TRAIN_LOG_TEXT).read_text()
    assert f"eval loss on {eval_text}; generation metrics on {gen_text}" in text.splitlines()[0]
    assert f"eval loss on {eval_text}" in text and f"generation metrics on {gen_text}" in text
    assert json.loads((tmp_path / RUN_FILE).read_text())["evaluation_records"]["eval"]["n"] == 12
    snap = take_snapshot(tmp_path, pid_check=False)
    shown = format_snapshot(snap)
    assert f"(step 4) on {eval_text}" in shown
    assert f"Generation metrics (step 4 on {gen_text}): all_classification_balanced_accuracy" in shown
