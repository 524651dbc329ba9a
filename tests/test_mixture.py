"""The training draw: %NN sizes, the mixture temperature and class balance, on hand-made sets with frequencies
checked against the stated weights; purity (seed only) and the errors before the model loads."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import qwenvl.data as reg
from qwenvl.data.mixture import (
    balanced_draw,
    format_mixture,
    plan_mixture,
    record_classes,
    seeded_draw,
    temperature_counts,
)


def _rec(task: str, answer: str) -> dict:
    return {
        "image": "/x.png",
        "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": answer}],
        "meta": {"task_type": task},
    }


def _answers(records, indices) -> Counter:
    return Counter(records[i]["conversations"][1]["value"] for i in indices)


def test_temperature_shares_by_size_to_the_one_over_t():
    assert temperature_counts({"a": 100, "b": 1}, 1.0) == pytest.approx({"a": 100, "b": 1})
    # T = 2: shares by sqrt(size), 10 : 1, the total of 101 draws kept
    assert temperature_counts({"a": 100, "b": 1}, 2.0) == pytest.approx({"a": 101 * 10 / 11, "b": 101 / 11})
    equalish = temperature_counts({"a": 100, "b": 1}, 1e6)
    assert equalish["a"] == pytest.approx(50.5, rel=1e-3)
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="must be a positive number"):
            temperature_counts({"a": 1}, bad)


def test_draws_are_whole_passes_plus_a_seeded_sample_and_depend_only_on_the_seed():
    draw = seeded_draw(range(4), 10, seed=3, name="x")
    assert Counter(draw) == {i: 2 for i in range(4)} | {i: 3 for i in set(draw[8:])}
    assert len(draw) == 10 and draw[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert seeded_draw(range(4), 10, 3, "x") == draw and seeded_draw(range(100), 10, 4, "x") != seeded_draw(
        range(100), 10, 3, "x"
    )
    # T = 1 without balance is the %NN draw the registry always made
    assert seeded_draw(range(20), 50, 7, "flare_a") == reg.sample_indices(20, 2.5, 7, "flare_a")


def test_mixture_with_temperature_and_class_balance_on_a_hand_made_set():
    big = [_rec("classification", "A")] * 90 + [_rec("classification", "B")] * 10
    small = [_rec("classification", "C")] * 4
    draws = plan_mixture([("big", big, 1.0, True), ("small", small, 1.0, False)], temperature=2.0, seed=0)
    by_name = {d.name: d for d in draws}
    # 104 draws shared by sqrt(100) : sqrt(4) = 10 : 2, then big's 87 split equally over its two classes
    assert (by_name["big"].draws, by_name["small"].draws) == (87, 17)
    assert by_name["big"].classes == {"A": 44, "B": 43}
    assert _answers(big, by_name["big"].indices) == {"A": 44, "B": 43}
    assert sorted(Counter(by_name["small"].indices).values()) == [4, 4, 4, 5]  # 4 passes + 1 seeded extra
    plain = plan_mixture([("big", big, 1.0, False), ("small", small, 1.0, False)], temperature=1.0, seed=0)
    assert [d.draws for d in plain] == [100, 4] and _answers(big, plain[0].indices) == {"A": 90, "B": 10}
    table = format_mixture(draws, {"big": 870, "small": 170}, 2.0)
    assert "big +balanced      100     87     83.7      83.7" in table
    assert "big draws per class: A 44, B 43" in table


def test_balance_keeps_other_task_types_share_and_uses_the_rarest_label():
    records = (
        [_rec("classification", "A")] * 5 + [_rec("classification", "B")] + [_rec("detection", "[]")] * 4
    )
    indices, classes = balanced_draw(records, 20, seed=1, name="mixed")
    assert classes == {"classification: A": 6, "classification: B": 6} or classes == {"A": 6, "B": 6}
    tasks = Counter(records[i]["meta"]["task_type"] for i in indices)
    assert tasks == {"classification": 12, "detection": 8}  # their 6 : 4 share of the 20 draws
    multi = [_rec("multi-label classification", "effusion; nodule")] + [
        _rec("multi-label classification", "effusion")
    ] * 3
    assert record_classes(multi) == ["nodule", "effusion", "effusion", "effusion"]  # the rarest label
    assert record_classes([_rec("classification", " b "), _rec("detection", "[]")]) == ["B", None]
    _, classes = balanced_draw(multi, 8, seed=0, name="ml")
    assert classes == {"effusion": 4, "nodule": 4}


def test_bad_mixtures_are_named_with_the_fix():
    with pytest.raises(
        ValueError, match=r"det\+balanced: the dataset has no record whose task type has classes"
    ):
        plan_mixture([("det", [_rec("detection", "[]")] * 3, 1.0, True)], 1.0, 0)
    with pytest.raises(ValueError, match=r"tiny gets no draw .* raise its %NN or the temperature"):
        plan_mixture(
            [
                ("big", [_rec("regression", "1")] * 1000, 1.0, False),
                ("tiny", [_rec("regression", "1")], 0.1, False),
            ],
            1.0,
            0,
        )
    parsed = reg.parse_dataset_use("flare_retino%50+balanced@256,flare_busi_det")
    assert [(u.name, u.rate, u.visual_tokens, u.balanced) for u in parsed] == [
        ("flare_retino", 0.5, (None, 256), True),
        ("flare_busi_det", 1.0, None, False),
    ]
    with pytest.raises(ValueError, match=r"unknown flag \+fair"):
        reg.parse_dataset_use("flare_retino+fair")


def test_training_draw_from_the_registry_reports_the_mix(demo_converted, registry_at, tiny_dir):
    from qwenvl.data.dataset import build_supervised_dataset
    from qwenvl.model import load_processor

    registry_at(demo_converted)
    processor = load_processor(tiny_dir, min_pixels=1024, max_pixels=16384)
    ds = build_supervised_dataset(
        "flare_retino+balanced,flare_busi_det%50", processor, 4096, seed=0, mixture_temperature=2.0
    )
    mix = ds.report["mixture"]
    # 6 + 3 draws shared by sqrt(6) : sqrt(3)
    assert mix["temperature"] == 2.0
    assert {n: d["draws"] for n, d in mix["datasets"].items()} == {"flare_retino": 5, "flare_busi_det": 4}
    assert sum(mix["datasets"]["flare_retino"]["classes"].values()) == 5
    assert json.loads(json.dumps(ds.report))["mixture"] == mix  # dataset_report.json / run_info.json take it
    with pytest.raises(ValueError, match=r"flare_busi_det\+balanced"):
        build_supervised_dataset("flare_busi_det+balanced", processor, 4096, seed=0, mixture_temperature=1.0)
