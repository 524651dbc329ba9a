"""Loss normalisation: per token (the guide's), per sample, per dataset. Hand-computed weights, and an SGD step
(lr 1, no clipping) whose update is minus the gradient of the stated weighted loss over a whole step of
gradient accumulation; packed = padded = accumulated is in test_packing.py, several ranks in
test_distributed.py."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from test_training import _assert_one_sgd_step

from qwenvl.train.loss import DATASET, SAMPLE, StepCounts, sample_weights, weighted_token_loss


def test_sample_and_dataset_weights_are_hand_computed():
    counts = StepCounts(samples=4, datasets=Counter({"a": 3, "b": 1}))
    assert sample_weights(SAMPLE, ["a", "b"], counts) == [0.25, 0.25]
    # two datasets in the step: each weighs 1/2, shared by its samples (a: 3 of them, b: 1)
    assert sample_weights(DATASET, ["a", "a", "b"], counts) == pytest.approx([1 / 6, 1 / 6, 1 / 2])
    assert sum(sample_weights(DATASET, ["a", "a", "a", "b"], counts)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not 'token'"):
        sample_weights("token", ["a"], counts)
    merged = StepCounts.merged([StepCounts.of_batches([{"sample_datasets": ["a", "b"]}]), counts])
    assert (merged.samples, dict(merged.datasets)) == (6, {"a": 4, "b": 2})


def test_weighted_token_loss_is_each_samples_mean_times_its_weight():
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 7), torch.tensor([1, 2, 3, 4, 5])
    token_sample = torch.tensor([0, 0, 0, 1, 1])  # sample 0 has 3 supervised tokens, sample 1 two
    ce = F.cross_entropy(logits, targets, reduction="none")
    expected = 0.3 * ce[:3].mean() + 0.7 * ce[3:].mean()
    assert weighted_token_loss(logits, targets, token_sample, [0.3, 0.7]) == pytest.approx(float(expected))


@pytest.mark.parametrize("mode", [SAMPLE, DATASET])
def test_sgd_step_follows_the_normalised_loss_over_the_whole_accumulation(
    mode, tiny_dir, demo_converted, registry_at, tmp_path
):
    """Three samples from two datasets (a long detection answer, two one-letter answers), one per micro-batch,
    accumulated into one step: the update is minus the gradient of sum_i W_i * mean_i(ce)."""
    from qwenvl.data.collator import PaddedCollator, pop_stats
    from qwenvl.data.dataset import build_supervised_dataset
    from qwenvl.model import load_model, load_processor
    from qwenvl.train.train_qwen import main

    registry_at(demo_converted)
    datasets = "flare_busi_det%17,flare_retino%34"  # 1 + 2 records of the 6-record demo files
    out = tmp_path / "run"
    argv = {
        "model_name_or_path": str(tiny_dir),
        "dataset_use": datasets,
        "output_dir": str(out),
        "max_steps": "1",
        "per_device_train_batch_size": "1",
        "gradient_accumulation_steps": "3",
        "optim": "sgd",
        "learning_rate": "1.0",
        "weight_decay": "0",
        "max_grad_norm": "0",
        "lr_scheduler_type": "constant",
        "tune_mm_vision": "False",
        "save_strategy": "steps",
        "save_steps": "1",
        "report_to": "none",
        "dataloader_num_workers": "0",
        "seed": "7",
        "min_pixels": "1024",
        "max_pixels": "16384",
        "loss_normalisation": mode,
    }
    assert main([x for k, v in argv.items() for x in (f"--{k}", v)]) == 0

    processor = load_processor(tiny_dir, min_pixels=1024, max_pixels=16384)
    ds = build_supervised_dataset(datasets, processor, 4096, seed=7)
    names = [s.source["dataset"] for s in ds.samples]
    assert len(ds) == 3 and Counter(names) == {"flare_busi_det": 1, "flare_retino": 2}
    weights = {SAMPLE: [1 / 3] * 3, DATASET: [0.5 if n == "flare_busi_det" else 0.25 for n in names]}[mode]
    model = load_model(tiny_dir, dtype="float32")
    model.config.use_cache = False
    collate = PaddedCollator(pad_token_id=processor.tokenizer.pad_token_id)
    lengths = []
    for i, weight in enumerate(weights):
        batch = collate([ds[i]])
        pop_stats(batch)
        labels = batch.pop("labels")
        logits = model(**batch).logits[0, :-1]
        targets = labels[0, 1:]
        keep = targets != -100
        lengths.append(int(keep.sum()))
        (weight * F.cross_entropy(logits[keep], targets[keep])).backward()
    assert len(set(lengths)) == 2  # a long answer and letters: token and sample normalisation differ here
    _assert_one_sgd_step(out / "checkpoint-1", model)
