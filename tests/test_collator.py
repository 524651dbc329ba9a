"""Padded and packed collators: exact batch contents, skipped items, and packed == unpacked on the tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from qwenvl.data.collator import PackedCollator, PaddedCollator, pop_stats
from qwenvl.data.processing import IGNORE_INDEX, encode_record
from qwenvl.model import load_model, load_processor

PAD = 151643  # <|endoftext|>
ATOL = 1e-5


@pytest.fixture(scope="module")
def processor(tiny_dir: Path):
    return load_processor(tiny_dir, min_pixels=4 * 1024, max_pixels=16 * 1024)


@pytest.fixture(scope="module")
def model(tiny_dir: Path):
    m = load_model(tiny_dir, dtype=torch.float32, attn_implementation="sdpa")
    m.eval()
    return m


def _noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _record(n_images: int, question: str, answer: str) -> dict:
    return {
        "image": [f"/img{k}.png" for k in range(n_images)],
        "conversations": [
            {"from": "human", "value": "<image>\n" * n_images + question},
            {"from": "gpt", "value": answer},
        ],
    }


@pytest.fixture(scope="module")
def samples(processor) -> list[dict]:
    """Three mixed samples of different lengths: 2 images, 1 image, text only."""
    two = encode_record(
        _record(2, "Compare the two scans.", "The right one shows a mass."),
        processor,
        [_noise(96, 64, 0), _noise(48, 160, 1)],
    )
    one = encode_record(_record(1, "Grade?", "3"), processor, [_noise(128, 128, 2)])
    text = encode_record(_record(0, "Name a bone of the forearm.", "Radius."), processor, [])
    lengths = [s["input_ids"].numel() for s in (two, one, text)]
    assert len(set(lengths)) == 3
    return [two, one, text]


def _fake(ids: list[int], labels: list[int], dataset: str = "") -> dict:
    n = len(ids)
    return {
        "dataset": dataset,
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "position_ids": (torch.arange(n) + 10).unsqueeze(0).repeat(3, 1),
    }


# ------------------------------------------------------------------------------------------- padded
def test_padded_batch_exact_values() -> None:
    a = _fake([1, 2, 3], [IGNORE_INDEX, 2, 3], "flare_retino")
    b = _fake([4, 5], [IGNORE_INDEX, 5], "flare_neojaundice")
    batch = PaddedCollator(PAD)([a, None, b])
    stats = pop_stats(batch)
    assert set(batch) == {"input_ids", "labels", "attention_mask", "position_ids"}
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, PAD]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, 3], [IGNORE_INDEX, 5, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["position_ids"].shape == (4, 2, 3)
    assert batch["position_ids"][0].tolist() == [[0, 1, 2], [0, 1, 2]]
    assert batch["position_ids"][1:, 0].tolist() == [[10, 11, 12]] * 3
    assert batch["position_ids"][1:, 1, :2].tolist() == [[10, 11]] * 3
    assert stats == {
        "stat_num_samples": 2,
        "stat_num_skipped": 1,
        "stat_num_images": 0,
        "stat_num_tokens": 5,
        "stat_num_positions": 6,
        "stat_num_supervised": 3,
        "sample_datasets": ["flare_retino", "flare_neojaundice"],  # each kept sample's dataset, in order
        "sample_index": stats["sample_index"],
    }
    assert stats["sample_index"].tolist() == [[0, 0, 0], [1, 1, -1]]  # each position's sample; -1: padding
    assert all(type(v) is int for k, v in stats.items() if k.startswith("stat_"))


def test_padded_batch_concatenates_pixels_in_order(samples) -> None:
    two, one, text = samples
    batch = PaddedCollator(PAD)([text, two, one])
    assert torch.equal(batch["pixel_values"], torch.cat([two["pixel_values"], one["pixel_values"]]))
    assert torch.equal(batch["image_grid_thw"], torch.cat([two["image_grid_thw"], one["image_grid_thw"]]))
    width = max(s["input_ids"].numel() for s in samples)
    assert batch["input_ids"].shape == (3, width)
    assert batch["stat_num_images"] == 3
    n = two["input_ids"].numel()
    assert torch.equal(batch["position_ids"][1:, 1, :n], two["position_ids"])
    assert "pixel_values" not in PaddedCollator(PAD)([text])


@pytest.mark.parametrize("collator", [PaddedCollator(PAD), PackedCollator(PAD)], ids=["padded", "packed"])
def test_all_none_gives_placeholder(collator) -> None:
    batch = collator([None, None])
    stats = pop_stats(batch)
    assert batch["input_ids"].tolist() == [[PAD]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX]]
    assert batch["position_ids"].shape == (4, 1, 1)
    assert ("attention_mask" in batch) == isinstance(collator, PaddedCollator)
    assert stats["stat_num_samples"] == 0 and stats["stat_num_skipped"] == 2
    assert stats["stat_num_supervised"] == 0 and stats["stat_num_tokens"] == 0


# ------------------------------------------------------------------------------------------- packed
def test_packed_batch_exact_values() -> None:
    a = _fake([1, 2, 3], [IGNORE_INDEX, 2, 3], "flare_retino")
    b = _fake([4, 5], [5, 5], "flare_retino")  # a first label is never supervised across the sample boundary
    batch = PackedCollator(PAD)([a, b, None])
    stats = pop_stats(batch)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5]]
    assert batch["position_ids"][:, 0].tolist() == [[0, 1, 2, 0, 1]] + [[10, 11, 12, 10, 11]] * 3
    assert stats == {
        "stat_num_samples": 2,
        "stat_num_skipped": 1,
        "stat_num_images": 0,
        "stat_num_tokens": 5,
        "stat_num_positions": 5,
        "stat_num_supervised": 3,
        "sample_datasets": ["flare_retino", "flare_retino"],
        "sample_index": stats["sample_index"],
    }
    assert stats["sample_index"].tolist() == [[0, 0, 0, 1, 1]]  # both samples in one packed row


def _sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of one sample (logits ``(L, V)``, labels ``(L,)``)."""
    return F.cross_entropy(logits[:-1], labels[1:], ignore_index=IGNORE_INDEX)


def _forward(model, batch: dict):
    """The model's output for a collated batch (the trainer's way: stat_* popped, use_cache off)."""
    pop_stats(batch)
    return model(**batch, use_cache=False)


def test_packed_equals_unpacked_losses_logits_and_grads(model, samples) -> None:
    lengths = [s["input_ids"].numel() for s in samples]
    n_supervised = [int((s["labels"][1:] != IGNORE_INDEX).sum()) for s in samples]

    model.zero_grad()
    alone_logits, alone_loss = [], []
    for s in samples:
        out = _forward(model, PaddedCollator(PAD)([s]))
        loss = _sample_loss(out.logits[0], s["labels"])
        torch.testing.assert_close(loss, out.loss, atol=ATOL, rtol=0)  # our per-sample loss == the model's
        loss.backward()
        alone_logits.append(out.logits[0].detach())
        alone_loss.append(loss.detach())
    alone_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    packed = PackedCollator(PAD)(samples)
    assert packed["input_ids"].shape == (1, sum(lengths))
    assert "attention_mask" not in packed
    out = _forward(model, packed)
    total = out.logits.new_zeros(())
    for s, chunk, ref_logits, ref_loss in zip(
        samples, out.logits[0].split(lengths), alone_logits, alone_loss, strict=True
    ):
        torch.testing.assert_close(chunk.detach(), ref_logits, atol=ATOL, rtol=0)
        loss = _sample_loss(chunk, s["labels"])
        torch.testing.assert_close(loss.detach(), ref_loss, atol=ATOL, rtol=0)
        total = total + loss
    # The model's own loss on the packed row is the token-weighted mean of the samples' losses: no token is
    # predicted across a sample boundary.
    weighted = sum(loss * n for loss, n in zip(alone_loss, n_supervised)) / sum(n_supervised)
    torch.testing.assert_close(out.loss.detach(), weighted, atol=ATOL, rtol=0)

    total.backward()
    packed_grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert packed_grads.keys() == alone_grads.keys()
    assert any(n.startswith("model.visual") for n in packed_grads)  # the vision tower was trained too
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, alone_grads[name], atol=ATOL, rtol=1e-4, msg=name)
    model.zero_grad()


def test_without_restarting_positions_samples_leak(model, samples) -> None:
    """Control: the same packed row with row 0 = one running arange is a single sequence, so the second
    sample attends to the first and its logits change. This is what the packed test above rules out."""
    lengths = [s["input_ids"].numel() for s in samples]
    packed = PackedCollator(PAD)(samples)
    packed["position_ids"][0, 0] = torch.arange(sum(lengths))
    with torch.no_grad():
        alone = _forward(model, PaddedCollator(PAD)([samples[1]])).logits[0]
        leaked = _forward(model, packed).logits[0].split(lengths)[1]
    assert (leaked - alone).abs().max() > 1e-3


def test_named_skipped_records_are_listed() -> None:
    from qwenvl.data.dataset import SkippedRecord

    gone = SkippedRecord("flare_x", "/d/x.json", 3, "image /d/3.jpg cannot be loaded")
    batch = PaddedCollator(PAD)([gone, None])
    assert batch["skipped_records"] == ["flare_x record 3 (/d/x.json): image /d/3.jpg cannot be loaded"]
    assert batch["stat_num_skipped"] == 2 and batch["stat_num_samples"] == 0
