"""Image budgets: the 32x32 arithmetic, the dataset table's budgets, plans and their round trip."""

from __future__ import annotations

import pytest

from qwenvl.flare import defaults
from qwenvl.flare.datasets import FLARE_DATASETS
from qwenvl.flare.pixels import (
    GLOBAL,
    PER_DATASET,
    SOURCE_OVERRIDE,
    SOURCE_TABLE,
    BudgetPlan,
    ImageBudget,
    build_plan,
    dataset_key,
    pixels_to_tokens,
    plan_problems,
    resolve_policy,
    table_budget,
    tokens_to_pixels,
)

GUIDE = ImageBudget(defaults.MIN_PIXELS, defaults.MAX_PIXELS)


def test_token_arithmetic_is_32_by_32():
    assert tokens_to_pixels(49) == defaults.MAX_PIXELS == 50176
    assert pixels_to_tokens(50176) == 49 and pixels_to_tokens(1023) == 1 and pixels_to_tokens(0) == 0
    assert GUIDE.max_tokens == 49 and GUIDE.min_tokens == 1 and GUIDE.side == 224
    budget = ImageBudget.from_tokens(1024, 256)
    assert (budget.min_pixels, budget.max_pixels) == (262144, 1048576)
    assert budget.processor_size() == {"shortest_edge": 262144, "longest_edge": 1048576}
    assert budget.describe() == "256-1024 tokens (1,048,576 px, 1024x1024)"
    assert GUIDE.describe() == "<= 49 tokens (50,176 px, 224x224)"


def test_every_dataset_has_a_budget_with_a_reason():
    for name, config in FLARE_DATASETS.items():
        budget = table_budget(name)
        assert budget is not None and not budget.problems(name), name
        assert config.budget_reason and len(config.budget_reason) < 110, name
    # high for the small-object tasks, the guide's where the answer is a global appearance
    assert table_budget("chromosome").max_tokens == 1296 and table_budget("neurips22cell").max_tokens == 1024
    assert table_budget("BUSI-det").max_tokens > table_budget("retino").max_tokens > GUIDE.max_tokens
    assert table_budget("neojaundice") == GUIDE
    assert table_budget("flare_busi_det_val") == table_budget("BUSI-det")
    assert table_budget("my_own_set") is None


def test_dataset_key_accepts_every_spelling():
    for spelling in ("BUSI-det", "busi_det", "flare_busi_det", "flare_busi_det_val", "flare_busi_det_test"):
        assert dataset_key(spelling) == "BUSI-det"
    assert dataset_key("my_set") == "my_set" and dataset_key(None) is None


def test_auto_policy_keeps_the_guides_global_flags_meaning():
    assert resolve_policy("auto", explicit_global=False) == PER_DATASET
    assert resolve_policy("auto", explicit_global=True) == GLOBAL
    assert resolve_policy("global", explicit_global=False) == GLOBAL
    with pytest.raises(ValueError, match="unknown pixel policy"):
        resolve_policy("per-image", explicit_global=False)


def test_plans_per_dataset_global_and_overrides():
    names = ["flare_chromosome", "flare_retino", "flare_neojaundice_val", "my_set"]
    plan = build_plan(PER_DATASET, GUIDE, names, overrides={"flare_retino": (None, 100)})
    assert plan.for_dataset("chromosome") == table_budget("chromosome")
    assert plan.for_dataset("retino") == ImageBudget(defaults.MIN_PIXELS, 102400)
    assert plan.sources["retino"] == SOURCE_OVERRIDE and plan.sources["chromosome"] == SOURCE_TABLE
    assert plan.for_dataset("my_set") == GUIDE  # not in the table: the global budget
    record = {"meta": {"dataset": "chromosome"}, "conversations": []}
    assert plan.for_record(record) == table_budget("chromosome")
    assert plan.for_record({"_source": {"dataset": "flare_retino_val"}}) == ImageBudget(784, 102400)
    assert plan.for_record({"conversations": []}) == GUIDE

    uniform = build_plan(GLOBAL, GUIDE, names, overrides={"my_set": (4, 16)})
    assert uniform.for_dataset("chromosome") == GUIDE
    assert uniform.for_dataset("my_set") == ImageBudget(4096, 16384)  # explicit overrides win under both


def test_plan_round_trips_through_run_info():
    plan = build_plan(PER_DATASET, ImageBudget(1024, 16384), ["flare_busi_det", "flare_retino"])
    back = BudgetPlan.from_run_info({"pixel_budgets": plan.as_record()})
    assert back == plan
    old = {"arguments": {"data": {"min_pixels": 1024, "max_pixels": 16384}}}
    assert BudgetPlan.from_run_info(old) == BudgetPlan.single(ImageBudget(1024, 16384))
    assert BudgetPlan.from_run_info({}) is None
    with pytest.raises(ValueError, match="malformed pixel_budgets"):
        BudgetPlan.from_run_info({"pixel_budgets": {"datasets": {}}})


def test_bad_budgets_are_named():
    plan = build_plan(PER_DATASET, ImageBudget(2048, 1024), ["flare_retino"], overrides={"x": (None, 1)})
    problems = plan_problems(plan)
    assert any(
        "--min_pixels/--max_pixels: min_pixels 2048 is larger than max_pixels 1024" in p for p in problems
    )
    assert ImageBudget(784, 1000).problems("dataset y") == [
        "dataset y: max_pixels 1000 is below one visual token (32x32 = 1024 pixels); use >= 1024"
    ]
