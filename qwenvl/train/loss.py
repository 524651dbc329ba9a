"""How an optimizer step's loss is normalised: per token (the guide's), per sample, or per dataset.

With ``token`` the step's loss is the sum of its supervised tokens' cross-entropy over their number, so a
sample weighs as many tokens as its answer has: one 46-chromosome answer (~1,100 tokens) outweighs hundreds of
one-letter answers. ``sample`` averages each sample's tokens first, then the samples; ``dataset`` averages the
samples of each dataset, then the datasets present in the step. All three are sums over the step's tokens with
a weight per token,

    loss = sum_t w_t * ce_t,   w_t = W_s / n_s  for a token of sample s with n_s supervised tokens,

where ``W_s`` is ``n_s / N`` (token, N the step's supervised tokens), ``1 / S`` (sample, S the step's
samples) or ``1 / (D * S_d)`` (dataset, D datasets in the step, S_d of its samples from dataset d). The
weights depend only on counts over the whole optimizer step (every micro-batch of the accumulation, every
rank), which the trainer gathers before the first micro-batch (:class:`StepCounts`), so the loss of a step is
the same whether its samples come padded, packed, accumulated or spread over processes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

TOKEN = "token"
SAMPLE = "sample"
DATASET = "dataset"
NORMALISATIONS = (TOKEN, SAMPLE, DATASET)


@dataclass
class StepCounts:
    """Samples in one optimizer step (all micro-batches, all ranks), in all and per dataset."""

    samples: int = 0
    datasets: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of_batches(cls, batches: Iterable[dict]) -> StepCounts:
        """The counts of this rank's micro-batches (their ``sample_datasets``, as the collators write them)."""
        out = cls()
        for batch in batches:
            names = batch.get("sample_datasets") or []
            out.samples += len(names)
            out.datasets.update(names)
        return out

    @classmethod
    def merged(cls, parts: Iterable[StepCounts]) -> StepCounts:
        out = cls()
        for part in parts:
            out.samples += part.samples
            out.datasets.update(part.datasets)
        return out


def sample_weights(mode: str, datasets: Sequence[str], counts: StepCounts) -> list[float]:
    """``W_s`` of each sample of a micro-batch (its datasets in sample order) under ``mode`` (sample or
    dataset; see the module docstring)."""
    if mode == SAMPLE:
        return [1.0 / max(counts.samples, 1)] * len(datasets)
    if mode == DATASET:
        present = max(len(counts.datasets), 1)
        return [1.0 / (present * max(counts.datasets.get(name, 0), 1)) for name in datasets]
    raise ValueError(f"sample_weights is for {SAMPLE} / {DATASET} normalisation, not {mode!r}")


def weighted_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, token_sample: torch.Tensor, weights: Sequence[float]
) -> torch.Tensor:
    """``sum_t W_s / n_s * ce_t`` over the kept tokens: ``logits`` ``[..., N, vocab]``, their ``N`` target
    ids, the sample (index into ``weights``) each token belongs to."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets, reduction="none")
    per_sample = torch.bincount(token_sample, minlength=len(weights)).clamp(min=1).to(ce.dtype)
    w = torch.tensor(list(weights), dtype=ce.dtype, device=ce.device)
    return (ce * (w / per_sample)[token_sample]).sum()
