"""Named recipes (configs/recipes/*.env, RECIPE=NAME in the launcher): every choice has its reason, the
environment wins over the file, bad names and lines are refused, and flare_all's datasets are all 19 with class
balance on exactly the class datasets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qwenvl.data import parse_dataset_use
from qwenvl.flare import tasks as T
from qwenvl.flare.datasets import FLARE_DATASETS, registry_name
from qwenvl.train.loss import NORMALISATIONS

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs" / "recipes").glob("*.env"))


def _load(env: dict[str, str], names: str) -> subprocess.CompletedProcess:
    """``load_recipe`` of scripts/_recipe.sh in a clean shell, then the values of ``names``."""
    script = f'REPO_ROOT={REPO}; source scripts/_recipe.sh; load_recipe; for v in {names}; do echo "$v=${{!v}}"; done'
    return subprocess.run(
        ["bash", "-c", script], cwd=REPO, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True
    )


def _values(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, value = line.partition("=")
            out[name] = value
    return out


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_line_has_its_reason(path):
    lines = path.read_text().splitlines()
    for k, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert "=" in line, (path.name, line)
            assert lines[k - 1].startswith("#") or line.split("=")[0] in ("EVAL_STEPS", "RUN_NAME"), (
                path.name,
                line,
            )


def test_flare_all_trains_all_19_datasets_balancing_the_class_ones():
    values = _values(REPO / "configs" / "recipes" / "flare_all.env")
    uses = parse_dataset_use(values["DATASETS"])
    assert [u.name for u in uses] == [registry_name(d) for d in FLARE_DATASETS]
    for use, config in zip(uses, FLARE_DATASETS.values()):
        has_classes = any(t in (T.CLASSIFICATION, T.MULTI_LABEL) for t in config.task_types)
        assert use.balanced == has_classes and use.rate == 1.0, use
    assert [u.name for u in parse_dataset_use(values["EVAL_DATASETS"])] == [
        registry_name(d, "val") for d in FLARE_DATASETS
    ]
    assert float(values["MIXTURE_TEMPERATURE"]) == 2 and values["LOSS_NORMALISATION"] in NORMALISATIONS
    assert values["PIXEL_POLICY"] == "per_dataset"


def test_the_environment_wins_over_the_recipe_and_bad_input_is_refused(tmp_path):
    out = _load({"RECIPE": "flare_all", "MIXTURE_TEMPERATURE": "1"}, "MIXTURE_TEMPERATURE LOSS_NORMALISATION")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["MIXTURE_TEMPERATURE=1", "LOSS_NORMALISATION=sample"]
    unknown = _load({"RECIPE": "flare_everything"}, "X")
    assert unknown.returncode == 2
    assert "unknown RECIPE=flare_everything" in unknown.stderr and "recipes: flare_all" in unknown.stderr
    bad = tmp_path / "bad.env"
    bad.write_text("# a comment\nLR=2e-5\nthis is not a setting\n")
    refused = _load({"RECIPE": str(bad)}, "LR")
    assert refused.returncode == 2 and "bad.env line 3: expected VAR=value" in refused.stderr
