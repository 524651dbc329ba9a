"""Collators: a list of encoded samples (``SupervisedDataset`` items, ``None`` for skipped ones) -> a batch.

Both collators always pass explicit 4-row position ids ``(4, B, L)``: row 0 holds the text positions (used by
transformers for the causal mask), rows 1-3 the mRoPE t/h/w ids of :mod:`qwenvl.data.rope`. The model therefore
never needs ``mm_token_type_ids`` (transformers 5.x) and never recomputes positions itself.

* :class:`PaddedCollator` right-pads the samples into ``B`` rows with an ``attention_mask``.
* :class:`PackedCollator` concatenates them into ONE row without an ``attention_mask``; row 0 restarts at 0 for
  each sample, from which transformers builds a block-diagonal causal mask (SDPA / flash-attention-2), so
  samples never attend to each other. Run the model with ``use_cache=False``.

Every batch carries statistics as python ints under keys starting with ``stat_`` (the trainer pops them before
the forward): ``stat_num_samples``, ``stat_num_skipped``, ``stat_num_images``, ``stat_num_tokens`` (real
tokens), ``stat_num_positions`` (``B * L``, padding included) and ``stat_num_supervised`` (labels != -100).
Every batch also names its samples for the loss normalisation (:mod:`qwenvl.train.loss`; the trainer pops
both before the forward): ``sample_datasets``, the registry name of each sample in order, and
``sample_index``, a ``(B, L)`` tensor giving each position's sample (its index in ``sample_datasets``; -1 on
padding). A skipped item is ``None`` or a :class:`~qwenvl.data.dataset.SkippedRecord`; the descriptions of the latter
(dataset, file, record index, reason) are listed under ``skipped_records`` (a list of strings, present only when
non-empty). A batch whose items were all skipped becomes a one-token placeholder with label -100 and
``stat_num_samples == 0``; it carries no supervised token, and the trainer gives it a zero loss (no gradient).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from qwenvl.data.processing import IGNORE_INDEX

STAT_PREFIX = "stat_"


def _four_row_ids(mrope_ids: torch.Tensor) -> torch.Tensor:
    """``(4, L)``: row 0 the text positions ``0..L-1``, rows 1-3 the sample's own mRoPE ids."""
    text = torch.arange(mrope_ids.shape[1], dtype=torch.long).unsqueeze(0)
    return torch.cat([text, mrope_ids.long()], dim=0)


def _stats(samples: list[dict], n_skipped: int, positions: int, labels: torch.Tensor) -> dict[str, int]:
    return {
        "stat_num_samples": len(samples),
        "stat_num_skipped": n_skipped,
        "stat_num_images": sum(int(s["image_grid_thw"].shape[0]) for s in samples if _has_images(s)),
        "stat_num_tokens": sum(int(s["input_ids"].numel()) for s in samples),
        "stat_num_positions": positions,
        "stat_num_supervised": int((labels != IGNORE_INDEX).sum()),
    }


def _name_samples(batch: dict[str, Any], samples: list[dict], sample_index: torch.Tensor) -> None:
    batch["sample_datasets"] = [str(s.get("dataset", "")) for s in samples]
    batch["sample_index"] = sample_index


def _has_images(sample: dict) -> bool:
    return sample.get("pixel_values") is not None and sample.get("image_grid_thw") is not None


def _add_pixels(batch: dict[str, Any], samples: list[dict]) -> None:
    """Concatenate the samples' pixels and grids in sample order; omit both keys when no sample has images."""
    with_images = [s for s in samples if _has_images(s)]
    if with_images:
        batch["pixel_values"] = torch.cat([s["pixel_values"] for s in with_images], dim=0)
        batch["image_grid_thw"] = torch.cat([s["image_grid_thw"].long() for s in with_images], dim=0)


def _split(items: Sequence[Any]) -> tuple[list[dict], int, list[str]]:
    """``(samples, number skipped, descriptions of the named skipped records)``."""
    samples = [s for s in items if isinstance(s, dict)]
    named = [
        s.describe() for s in items if s is not None and not isinstance(s, dict) and hasattr(s, "describe")
    ]
    return samples, len(items) - len(samples), named


def _name_skipped(batch: dict[str, Any], named: list[str]) -> dict[str, Any]:
    if named:
        batch["skipped_records"] = named
    return batch


def _placeholder(pad_token_id: int, n_skipped: int, with_mask: bool) -> dict[str, Any]:
    """One row of one pad token, label -100: a valid forward that supervises nothing."""
    batch: dict[str, Any] = {
        "input_ids": torch.full((1, 1), pad_token_id, dtype=torch.long),
        "labels": torch.full((1, 1), IGNORE_INDEX, dtype=torch.long),
        "position_ids": torch.zeros((4, 1, 1), dtype=torch.long),
    }
    if with_mask:
        batch["attention_mask"] = torch.ones((1, 1), dtype=torch.long)
    batch.update(_stats([], n_skipped, 1, batch["labels"]))
    return batch


@dataclass
class PaddedCollator:
    """Right-pad samples into ``(B, L)`` rows: pad id / label -100 / attention 0 on padding."""

    pad_token_id: int

    def __call__(self, items: Sequence[Any]) -> dict[str, Any]:
        samples, n_skipped, named = _split(items)
        if not samples:
            return _name_skipped(_placeholder(self.pad_token_id, n_skipped, with_mask=True), named)
        width = max(int(s["input_ids"].numel()) for s in samples)
        rows = len(samples)
        input_ids = torch.full((rows, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((rows, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((rows, width), dtype=torch.long)
        position_ids = torch.zeros((4, rows, width), dtype=torch.long)
        position_ids[0] = torch.arange(width, dtype=torch.long)  # text positions, padding included
        sample_index = torch.full((rows, width), -1, dtype=torch.long)
        for r, s in enumerate(samples):
            n = int(s["input_ids"].numel())
            input_ids[r, :n] = s["input_ids"]
            labels[r, :n] = s["labels"]
            attention_mask[r, :n] = 1
            position_ids[1:, r, :n] = s["position_ids"]
            sample_index[r, :n] = r
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
        }
        _add_pixels(batch, samples)
        _name_samples(batch, samples, sample_index)
        batch.update(_stats(samples, n_skipped, rows * width, labels))
        return _name_skipped(batch, named)


@dataclass
class PackedCollator:
    """Concatenate samples into one ``(1, total)`` row with per-sample position ids and no attention mask."""

    pad_token_id: int

    def __call__(self, items: Sequence[Any]) -> dict[str, Any]:
        samples, n_skipped, named = _split(items)
        if not samples:
            return _name_skipped(_placeholder(self.pad_token_id, n_skipped, with_mask=False), named)
        input_ids = torch.cat([s["input_ids"].long() for s in samples]).unsqueeze(0)
        pieces = []
        for s in samples:
            lab = s["labels"].clone().long()
            lab[0] = IGNORE_INDEX  # never predicted from the previous sample's last token
            pieces.append(lab)
        labels = torch.cat(pieces).unsqueeze(0)
        position_ids = torch.cat([_four_row_ids(s["position_ids"]) for s in samples], dim=1).unsqueeze(1)
        sample_index = torch.cat(
            [torch.full((int(s["input_ids"].numel()),), k, dtype=torch.long) for k, s in enumerate(samples)]
        ).unsqueeze(0)
        batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        _add_pixels(batch, samples)
        _name_samples(batch, samples, sample_index)
        batch.update(_stats(samples, n_skipped, int(input_ids.shape[1]), labels))
        return _name_skipped(batch, named)


SAMPLE_KEYS = ("sample_datasets", "sample_index")  # which sample each position is, for the loss


def pop_stats(batch: dict[str, Any]) -> dict[str, Any]:
    """Remove and return every entry of ``batch`` that is not a model input: the ``stat_*`` counts and the
    sample names of :data:`SAMPLE_KEYS` (what the trainer does before the forward)."""
    keys = [k for k in batch if k.startswith(STAT_PREFIX) or k in SAMPLE_KEYS]
    return {k: batch.pop(k) for k in keys}
