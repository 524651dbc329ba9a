"""Padding-free packing: the batch sampler (budget, coverage, determinism, rank balance) and real tiny
training runs: one optimizer step packed == padded (== padded with gradient accumulation), and a packed run
resumed mid-epoch sees the same packs as the uninterrupted run."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qwenvl.data.packing import (
    PackedBatchSampler,
    PackedEpochCallback,
    first_fit_decreasing,
    split_to_count,
)
from qwenvl.train.arguments import ArgumentError, parse_arguments


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(40, 400) for _ in range(n)]


# ------------------------------------------------------------------------------------------- packing
def test_first_fit_decreasing_exact_packs() -> None:
    lengths = [5, 4, 3, 3, 2, 1]
    # Longest first: 5 -> A, 4 -> B, 3 -> A (full), 3 -> B, 2 -> C (B has 1 left), 1 -> B.
    assert first_fit_decreasing(range(6), lengths, 8) == [[0, 2], [1, 3, 5], [4]]
    # Equal lengths keep their input order.
    assert first_fit_decreasing([3, 2], lengths, 8) == [[3, 2]]
    with pytest.raises(ValueError, match="sample 0 has 5 tokens, more than the pack budget of 4"):
        first_fit_decreasing(range(6), lengths, 4)


def test_split_to_count_balances_then_adds_empty_packs() -> None:
    lengths = [6, 5, 4, 3]
    assert split_to_count([[0, 1, 2, 3]], lengths, 2) == [[0, 3], [1, 2]]  # 9 and 9 tokens
    assert split_to_count([[0, 1]], lengths, 4) == [[0], [1], [], []]
    with pytest.raises(ValueError, match="3 packs cannot be brought down to 2"):
        split_to_count([[0], [1], [2]], lengths, 2)


def test_every_sample_once_within_budget_and_constant_length() -> None:
    lengths = _lengths(500)
    sampler = PackedBatchSampler(lengths, max_tokens=1024, seed=3, window=128)
    assert sampler.base_packs >= -(-sum(lengths) // 1024)
    for epoch in range(6):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)  # the Trainer reads the length once
        assert sorted(i for b in batches for i in b) == list(range(500))
        assert max(sum(lengths[i] for i in b) for b in batches) <= 1024
    summary = sampler.summary(0)
    assert summary.num_samples == 500 and summary.tokens == sum(lengths)
    assert summary.fill > 0.9 and summary.num_empty_packs == 0


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    lengths = _lengths(300, seed=1)
    a = PackedBatchSampler(lengths, 2048, seed=7)
    b = PackedBatchSampler(lengths, 2048, seed=7)
    b.set_epoch(2)
    list(b)  # iterating another epoch first changes nothing
    assert a.batches(2) == b.batches(2)
    assert a.batches(0) != a.batches(1)
    assert a.batches(0) != PackedBatchSampler(lengths, 2048, seed=8).batches(0)


def test_two_ranks_get_disjoint_balanced_batches() -> None:
    lengths = _lengths(400, seed=2)
    ranks = [PackedBatchSampler(lengths, 2048, num_replicas=2, rank=r, seed=5) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == ranks[0].num_packs // 2
    b0, b1 = ranks[0].batches(0), ranks[1].batches(0)
    seen = [i for b in b0 + b1 for i in b]
    assert sorted(seen) == list(range(400))
    for x, y in zip(b0, b1):  # the same micro-step on both ranks: tokens differ by at most one sample
        tx, ty = sum(lengths[i] for i in x), sum(lengths[i] for i in y)
        assert max(tx, ty) <= 2048
        assert abs(tx - ty) <= max(lengths)
    assert ranks[0].summary(0).rank_wait_share < 0.02


def test_packs_per_batch_and_fewer_samples_than_ranks() -> None:
    lengths = _lengths(200, seed=4)
    sampler = PackedBatchSampler(lengths, 1024, packs_per_batch=2)
    assert max(sum(lengths[i] for i in b) for b in sampler.batches(0)) <= 2048
    assert sampler.num_packs % 2 == 0
    # Three samples for four ranks: every rank gets one batch, one of them empty (a placeholder batch).
    tiny = [PackedBatchSampler([10, 20, 30], 100, num_replicas=4, rank=r) for r in range(4)]
    batches = [t.batches(0) for t in tiny]
    assert all(len(b) == 1 for b in batches)
    assert sorted(i for b in batches for i in b[0]) == [0, 1, 2]
    assert sum(1 for b in batches if not b[0]) == 1


def test_epoch_callback_counts_epochs_like_the_trainer() -> None:
    sampler = PackedBatchSampler([10] * 10, 20)
    callback = PackedEpochCallback(sampler, steps_per_epoch=3)
    for step, epoch in ((0, 0), (2, 0), (3, 1), (8, 2), (9, 3)):
        callback.on_epoch_begin(None, type("S", (), {"global_step": step})(), None)
        assert sampler.epoch == epoch


def test_packing_arguments(tmp_path: Path) -> None:
    base = ["--output_dir", str(tmp_path), "--dataset_use", "x", "--model_max_length", "2048"]
    packing = parse_arguments(base + ["--data_packing", "True"]).packing
    assert packing.enabled and packing.packing_max_tokens is None
    with pytest.raises(ArgumentError) as e:
        parse_arguments(base + ["--packing_max_tokens", "1024"])
    msg = str(e.value)
    assert msg.startswith("2 problem(s)")
    assert "--packing_max_tokens 1024 is below --model_max_length 2048" in msg
    assert "packing is off: add --data_flatten True" in msg


# ----------------------------------------------------------------------------------- tiny training
def _train(model: Path, out: Path, *extra: str, **opts) -> Path:
    from qwenvl.train.train_qwen import main

    defaults = {
        "model_name_or_path": str(model),
        "dataset_use": "flare_neojaundice%34,flare_retino%34",  # 2 multi-image + 2 single-image samples
        "output_dir": str(out),
        "max_steps": "1",
        "learning_rate": "1.0",
        "optim": "sgd",
        "lr_scheduler_type": "constant",
        "weight_decay": "0",
        "max_grad_norm": "0",
        "tune_mm_vision": "True",
        "logging_steps": "1",
        "save_strategy": "steps",
        "save_steps": "1000",
        "report_to": "none",
        "bf16": "False",
        "dataloader_num_workers": "0",
        "seed": "11",
        "min_pixels": "1024",
        "max_pixels": "16384",
    }
    defaults.update({k: str(v) for k, v in opts.items()})
    argv = [x for k, v in defaults.items() for x in (f"--{k}", v)] + list(extra)
    assert main(argv) == 0
    return out


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x]


def _step_loss(out: Path, step: int) -> float:
    return next(r["loss"] for r in _log(out) if r.get("step") == step and "loss" in r)


@pytest.mark.parametrize("normalisation", ["token", "sample", "dataset"])
def test_one_step_packed_equals_padded(
    tiny_dir, demo_converted, registry_at, tmp_path, normalisation
) -> None:
    """Under every loss normalisation: one step of 4 samples from two datasets, padded in one batch, one per
    micro-batch accumulated, and packed in one row, gives the same loss and the same update."""
    registry_at(demo_converted)
    norm = {"loss_normalisation": normalisation}
    padded = _train(
        tiny_dir, tmp_path / "padded", per_device_train_batch_size=4, gradient_accumulation_steps=1, **norm
    )
    accum = _train(
        tiny_dir, tmp_path / "accum", per_device_train_batch_size=1, gradient_accumulation_steps=4, **norm
    )
    packed = _train(
        tiny_dir,
        tmp_path / "packed",
        "--data_flatten",
        "True",
        per_device_train_batch_size=1,
        gradient_accumulation_steps=1,
        **norm,
    )
    data = json.loads((packed / "dataset_report.json").read_text())["train"]
    assert data["total_kept"] == 4

    rec = {
        name: next(r for r in _log(out) if "loss" in r)
        for name, out in [("padded", padded), ("packed", packed)]
    }
    assert rec["packed"]["samples"] == rec["padded"]["samples"] == 4
    assert rec["packed"]["tokens"] == rec["padded"]["tokens"]
    assert rec["packed"]["padding_share"] == 0.0 < rec["padded"]["padding_share"]
    assert rec["packed"]["samples_per_step"] == 4.0
    losses = [_step_loss(out, 1) for out in (padded, accum, packed)]
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
    assert losses[2] == pytest.approx(losses[0], abs=1e-5)

    before = load_file(str(tiny_dir / "model.safetensors"))
    after = {
        name: load_file(str(out / "model.safetensors"))
        for name, out in [("padded", padded), ("accum", accum), ("packed", packed)]
    }
    changed = 0
    for key, initial in before.items():
        update = after["padded"][key] - initial
        changed += int(update.abs().max() > 1e-4)
        for other in ("accum", "packed"):
            torch.testing.assert_close(
                after[other][key] - initial, update, atol=1e-5, rtol=1e-4, msg=f"{other} {key}"
            )
    assert changed > 20  # vision, mergers and LLM all moved (SGD, lr 1: the update is the gradient)


def test_packed_resume_sees_the_same_packs(tiny_dir, demo_converted, registry_at, tmp_path) -> None:
    registry_at(demo_converted)
    opts = {
        "dataset_use": "flare_neojaundice,flare_retino,flare_boneresorption",
        "model_max_length": "384",
        "learning_rate": "0.05",
        "tune_mm_vision": "False",
        "per_device_train_batch_size": "1",
        "save_steps": "5",
        "max_steps": "7",
    }
    full = _train(tiny_dir, tmp_path / "full", "--data_flatten", "True", **opts)
    state = json.loads((full / "checkpoint-5" / "trainer_state.json").read_text())
    assert 1.0 < state["epoch"] < 2.0  # the checkpoint is inside the second epoch
    per_step = {r["step"]: r["samples"] for r in _log(full) if "loss" in r}
    assert [per_step[s] for s in (1, 2, 3)] != [per_step[s] for s in (5, 6, 7)]  # epoch 2 repacks
    # Resume in a copy of the run folder (as --resume_from_checkpoint auto does in place).
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    _train(
        tiny_dir,
        resumed,
        "--data_flatten",
        "True",
        "--resume_from_checkpoint",
        str(resumed / "checkpoint-5"),
        **opts,
    )
    assert sorted(r["step"] for r in _log(resumed) if "loss" in r) == [1, 2, 3, 4, 5, 6, 7]
    for step in (6, 7):
        assert _step_loss(resumed, step) == pytest.approx(_step_loss(full, step), abs=1e-6)
        samples = [
            next(r["samples"] for r in _log(o) if r.get("step") == step and "loss" in r)
            for o in (full, resumed)
        ]
        assert samples[0] == samples[1]
