"""The cost projection printed before training: hand-computed values of docs/performance.md's arithmetic."""

from __future__ import annotations

import pytest

from qwenvl.bench.projection import activation_gb, cost_lines, epoch_cost, table_projection


def test_epoch_cost_is_the_documented_arithmetic():
    cost = epoch_cost(samples=10, tokens=1000, visual_tokens=400, longest=500)
    # decoder 8 x 3.63e9 per token + a vision forward of 2 x 306e6 per patch, 4 patches per visual token
    assert cost.flops == pytest.approx(8 * 3.63e9 * 1000 + 2 * 306e6 * 4 * 400)
    assert cost.seconds["H100"] == pytest.approx(cost.flops / (0.4 * 989e12))
    assert cost.seconds["A100"] == pytest.approx(cost.flops / (0.4 * 312e12))
    # activations: each of 36 layers keeps its 2560-wide bf16 input, one layer's tensors are live
    assert activation_gb(500) == pytest.approx((500 * 2560 * 2 * 36 + 500 * (10 * 2560 + 3 * 9728) * 2) / 1e9)
    assert epoch_cost(10, 1000, 400, 500, vision_trained=True).flops == pytest.approx(
        8 * 3.63e9 * 1000 + 6 * 306e6 * 4 * 400
    )


def test_cost_lines_compare_the_mix_with_the_guides_budget():
    report = {
        "pixel_policy": "per_dataset",
        "datasets": {
            "a": {
                "kept": 2,
                "kept_tokens": 600,
                "kept_visual_tokens": 500,
                "kept_longest": 400,
                "guide_kept_tokens": 200,
                "guide_kept_visual_tokens": 100,
                "guide_kept_longest": 120,
            },
            "b": {
                "kept": 1,
                "kept_tokens": 100,
                "kept_visual_tokens": 0,
                "kept_longest": 100,
                "guide_kept_tokens": 100,
                "guide_kept_visual_tokens": 0,
                "guide_kept_longest": 100,
            },
        },
    }
    lines = cost_lines(report)
    assert "not a measurement" in lines[0]
    assert "this mix (per_dataset): 3 samples" in lines[1] and "longest sample 400 tokens" in lines[1]
    assert "the guide's one budget" in lines[2] and "longest sample 120 tokens" in lines[2]
    ratio = epoch_cost(3, 700, 500, 400).flops / epoch_cost(3, 300, 100, 120).flops
    assert lines[3] == f"  -> {ratio:.2f}x the guide's compute per epoch"


def test_table_projection_prices_the_per_dataset_budgets_above_the_guides():
    starters = {p: table_projection(False, p) for p in ("global", "per_dataset")}
    assert starters["global"].samples == starters["per_dataset"].samples == 4418
    assert starters["per_dataset"].visual_tokens > 3 * starters["global"].visual_tokens
    everything = table_projection(True, "per_dataset")
    assert everything.longest == 1296 + 1160  # a chromosome record: its image and its ~1,100-token answer
