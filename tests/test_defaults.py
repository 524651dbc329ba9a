"""Shared defaults are stated once (qwenvl.flare.defaults); the guide's script states the guide's values, and
this test holds the two together, so changing one without the other fails here."""

from __future__ import annotations

import re
from pathlib import Path

from qwenvl.flare import defaults
from qwenvl.tools.data_check.cli import build_parser
from qwenvl.train.arguments import DataArguments, ModelArguments

REPO = Path(__file__).resolve().parents[1]


def _script_defaults(name: str) -> dict[str, str]:
    """``VAR=${VAR:-value}`` defaults of a shell script."""
    text = (REPO / "scripts" / name).read_text(encoding="utf-8")
    return dict(re.findall(r"^([A-Z_]+)=\$\{\1:-([^}]*)\}", text, flags=re.MULTILINE))


def test_the_guides_script_states_the_shared_defaults():
    env = _script_defaults("sft_qwen3_4b_flare.sh")
    assert env["MODEL_PATH"] == defaults.MODEL == "Qwen/Qwen3-VL-4B-Instruct"
    assert int(env["MAX_LENGTH"]) == defaults.MODEL_MAX_LENGTH == 4096
    # Images: each dataset's own budget unless MAX_PIXELS / MIN_PIXELS is set (then the guide's one budget).
    assert env["PIXEL_POLICY"] == "auto" and env["MAX_PIXELS"] == env["MIN_PIXELS"] == ""
    assert (defaults.MIN_PIXELS, defaults.MAX_PIXELS) == (784, 50176)


def test_training_arguments_and_the_data_check_take_the_shared_defaults():
    assert ModelArguments().model_name_or_path == defaults.MODEL
    data = DataArguments(dataset_use="flare_retino")
    assert data.pixel_policy == "auto" and (data.min_pixels, data.max_pixels) == (None, None)
    plan = data.image_plan()  # no pixel flag: per dataset, the guide's budget for datasets outside the table
    assert plan.policy == "per_dataset"
    assert (plan.default.min_pixels, plan.default.max_pixels) == (defaults.MIN_PIXELS, defaults.MAX_PIXELS)
    guide = DataArguments(dataset_use="flare_retino", max_pixels=defaults.MAX_PIXELS).image_plan()
    assert guide.policy == "global" and guide.for_dataset("retino") == guide.default
    assert data.model_max_length == defaults.MODEL_MAX_LENGTH
    check = build_parser().parse_args([])
    assert check.model_path == defaults.MODEL
    assert check.pixel_policy == "auto" and (check.min_pixels, check.max_pixels) == (None, None)
    assert check.model_max_length == defaults.MODEL_MAX_LENGTH
