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
    assert int(env["MAX_PIXELS"]) == defaults.MAX_PIXELS == 50176
    assert int(env["MIN_PIXELS"]) == defaults.MIN_PIXELS == 784


def test_training_arguments_and_the_data_check_take_the_shared_defaults():
    assert ModelArguments().model_name_or_path == defaults.MODEL
    data = DataArguments()
    assert (data.min_pixels, data.max_pixels) == (defaults.MIN_PIXELS, defaults.MAX_PIXELS)
    assert data.model_max_length == defaults.MODEL_MAX_LENGTH
    check = build_parser().parse_args([])
    assert check.model_path == defaults.MODEL
    assert (check.min_pixels, check.max_pixels) == (defaults.MIN_PIXELS, defaults.MAX_PIXELS)
    assert check.model_max_length == defaults.MODEL_MAX_LENGTH
