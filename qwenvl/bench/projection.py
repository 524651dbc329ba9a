"""What one epoch of a training mix costs the real 4B model: a projection, printed before training starts.

The arithmetic of docs/performance.md ("Where the guide's hours go"), from the token counts the length check
measured (:func:`qwenvl.data.dataset.length_report`), so a user sees what higher image budgets cost before
paying for them:

- decoder: ``8 N`` FLOPs per token (forward 2 N, backward 4 N, the recomputed forward of gradient
  checkpointing 2 N) with ``N`` the matrix weights of the language model (4.02 B less the 389 M tied
  embedding: 3.63 B);
- vision tower: a forward of ``2 x 306 M`` FLOPs per patch, four patches (2 x 2 merge) per visual token; its
  backward only when the tower trains (``--tune_mm_vision``), which the guide's recipe does not;
- wall time at 40 % of the card's dense bf16 peak (:data:`qwenvl.bench.configs.PEAK_BF16_FLOPS`);
- activation memory of the longest sample with gradient checkpointing (:func:`activation_gb`), the part of
  GPU memory that grows with image budgets (weights and optimizer state: docs/performance.md's table).

Attention FLOPs are left out, as in docs/performance.md (about a tenth more for a 2,500-token sample; the
vision tower's full attention over a 1,296-token image's 5,184 patches adds about as much as its linear layers).
These are projections, never measurements: the GPU check (scripts/gpu_check.sh) measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qwenvl.bench.configs import STARTER_SAMPLES, format_duration, peak_bf16_flops

# Qwen3-VL-4B (configs/qwen3_vl_4b, counted on the meta device; docs/performance.md)
LLM_MATMUL_PARAMETERS = 3.63e9
VISION_PARAMETERS = 306e6
PATCHES_PER_VISUAL_TOKEN = 4  # spatial merge 2 x 2
HIDDEN, INTERMEDIATE, LAYERS = 2560, 9728, 36
UTILISATION = 0.40  # share of the dense bf16 peak a well-fed training run reaches
CARDS = ("H100", "A100")


@dataclass(frozen=True)
class EpochCost:
    """One epoch of a mix: its tokens, FLOPs, projected time per card and the longest sample's activations."""

    samples: int
    tokens: int
    visual_tokens: int
    flops: float
    seconds: dict[str, float]
    longest: int
    activation_gb: float

    def as_record(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "tokens": self.tokens,
            "visual_tokens": self.visual_tokens,
            "flops": float(f"{self.flops:.3g}"),
            "projected_seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "longest_sample": self.longest,
            "longest_sample_activation_gb": round(self.activation_gb, 2),
        }


def activation_gb(tokens: int) -> float:
    """bf16 activations of one row of ``tokens`` tokens through the 4B decoder with gradient checkpointing:
    each layer's input kept, one layer's attention and MLP tensors live (``qwenvl.bench.memory``'s formula)."""
    kept = tokens * HIDDEN * 2 * LAYERS
    live = tokens * (10 * HIDDEN + 3 * INTERMEDIATE) * 2
    return (kept + live) / 1e9


def epoch_cost(
    samples: int, tokens: int, visual_tokens: int, longest: int, vision_trained: bool = False
) -> EpochCost:
    """The projected cost of an epoch of ``samples`` samples holding ``tokens`` tokens, ``visual_tokens`` of
    them visual, the longest ``longest`` tokens."""
    vision_factor = 6 if vision_trained else 2
    flops = 8 * LLM_MATMUL_PARAMETERS * tokens
    flops += vision_factor * VISION_PARAMETERS * PATCHES_PER_VISUAL_TOKEN * visual_tokens
    seconds = {card: flops / (UTILISATION * (peak_bf16_flops(card) or 1.0)) for card in CARDS}
    return EpochCost(samples, tokens, visual_tokens, flops, seconds, longest, activation_gb(longest))


def mix_cost(report: dict[str, Any], vision_trained: bool = False, key: str = "") -> EpochCost:
    """The cost of the kept samples of a dataset report (``SupervisedDataset.report``); ``key`` ``"guide_"``
    reads the same samples' figures at the guide's one budget."""
    datasets = report["datasets"].values()
    return epoch_cost(
        sum(d["kept"] for d in datasets),
        sum(d.get(f"{key}kept_tokens", 0) for d in datasets),
        sum(d.get(f"{key}kept_visual_tokens", 0) for d in datasets),
        max((d.get(f"{key}kept_longest", 0) for d in datasets), default=0),
        vision_trained,
    )


def describe_cost(cost: EpochCost, label: str) -> str:
    """One line: tokens, FLOPs, projected time per card, the longest sample and its activations."""
    times = ", ".join(f"{format_duration(s)} on an {card}" for card, s in cost.seconds.items())
    return (
        f"{label}: {cost.samples:,} samples, {cost.tokens / 1e6:.2f} M tokens ({cost.visual_tokens / 1e6:.2f} M "
        f"visual) = {cost.flops:.2g} FLOPs -> {times} at {UTILISATION:.0%} of bf16 peak; longest sample "
        f"{cost.longest:,} tokens, ~{cost.activation_gb:.1f} GB of activations"
    )


def cost_lines(report: dict[str, Any], vision_trained: bool = False) -> list[str]:
    """What training prints before it starts (and ``dry_run.sh`` shows): the epoch cost of the mix under its
    image budgets and, when they differ, the same samples at the guide's one budget, marked as a projection."""
    policy = report.get("pixel_policy") or "the processor's budget"
    ours = mix_cost(report, vision_trained)
    lines = [
        "Projected cost of one epoch for Qwen3-VL-4B (arithmetic of docs/performance.md, not a measurement):",
        "  " + describe_cost(ours, f"this mix ({policy})"),
    ]
    if any("guide_kept_tokens" in d for d in report["datasets"].values()):
        guide = mix_cost(report, vision_trained, key="guide_")
        if guide.tokens and guide.tokens != ours.tokens:
            lines.append("  " + describe_cost(guide, "the guide's one budget (49 visual tokens per image)"))
            lines.append(f"  -> {ours.flops / guide.flops:.2f}x the guide's compute per epoch")
    return lines


# ------------------------------------------------------------------------ before any data: the table alone
# Typical text tokens of one record (template + question + answer, Qwen tokenizer) by task type: a letter is 2
# tokens, a box ~25, a 46-chromosome answer ~1,100 (../DESIGN facts), a report ~120.
TEXT_TOKENS = {
    "classification": 80,
    "multi-label classification": 90,
    "detection": 110,
    "instance_detection": 1160,
    "counting": 60,
    "regression": 70,
    "report_generation": 190,
}
ALL19_TRAIN_RECORDS = 52655  # the challenge's 19 training splits together (FLARE25_FORMAT)


def table_projection(all_datasets: bool, policy: str) -> EpochCost:
    """An epoch of the starter mix (``all_datasets`` False) or all 19 training splits, every image at its
    budget's full size (an upper bound: most FLARE images are larger than any budget view, small ones such as
    bone-marrow crops stay below it) and each record's text at :data:`TEXT_TOKENS`. Train counts: the published
    ones, scaled to the guide's 4,418 for the starters (their published per-dataset counts sum to 3,650); for all
    19, the datasets without one share the rest of the 52,655 records equally (an assumption, stated so)."""
    from qwenvl.flare.datasets import FLARE_DATASETS
    from qwenvl.flare.pixels import GLOBAL, table_budget

    chosen = {n: c for n, c in FLARE_DATASETS.items() if all_datasets or c.starter}
    known = {n: c.known_counts["train"] for n, c in chosen.items() if "train" in c.known_counts}
    unknown = [n for n in chosen if n not in known]
    if all_datasets and unknown:
        share = (ALL19_TRAIN_RECORDS - sum(known.values())) // len(unknown)
        known.update(dict.fromkeys(unknown, share))
    elif not all_datasets:
        scale = STARTER_SAMPLES / sum(known.values())
        known = {n: round(k * scale) for n, k in known.items()}
    samples = tokens = visual = longest = 0
    for name, config in chosen.items():
        n = known.get(name, 0)
        per_image = 49 if policy == GLOBAL else table_budget(name).max_tokens
        images = (config.max_images + 1) / 2 if config.multi_image else 1  # multi-image sets mix 1 and more
        text = max(TEXT_TOKENS[t] for t in config.task_types)
        samples += n
        visual += round(n * images * per_image)
        tokens += round(n * (images * per_image + text))
        longest = max(longest, config.max_images * per_image + text)
    return epoch_cost(samples, tokens, visual, longest)


def main() -> int:
    """``python -m qwenvl.bench.projection``: the table-only projection of the starter mix and of all 19
    datasets under both pixel policies."""
    from qwenvl.flare.pixels import GLOBAL, PER_DATASET

    print(
        "Projected epoch of Qwen3-VL-4B from the dataset table alone (every image at its budget, typical text"
    )
    print("lengths: qwenvl/bench/projection.py, table_projection). A projection, not a measurement.")
    for all_datasets, label in ((False, "starter mix"), (True, "all 19 datasets")):
        for policy in (GLOBAL, PER_DATASET):
            cost = table_projection(all_datasets, policy)
            print("  " + describe_cost(cost, f"{label}, {policy}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
