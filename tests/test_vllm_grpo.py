"""GRPO with vLLM rollouts (``--use_vllm True``, TRL's colocated engine) on vLLM's CPU build. Skipped where vLLM
is not installed; CI runs it in envs/vllm-cpu (.ci/vllm_env.sh).

vLLM's CPU build repacks the weights it loads and cannot take new ones (``weight_sync_problem``), so the
per-step weight sync is switched off here (the engine is built from the same checkpoint, so its first weights
are the trainer's): what runs for real is TRL's engine built with the toolkit's options and one training step
whose completions come from it, with the toolkit's rewards and per-task-type logging.
"""

from __future__ import annotations

import contextlib
import gc
import json
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from test_grpo import _args  # noqa: E402


@pytest.fixture(scope="module")
def tiny32(tmp_path_factory) -> Path:
    from qwenvl.model.tiny import VLLM_CPU_HEAD_DIM, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny32", seed=0, head_dim=VLLM_CPU_HEAD_DIM)


@pytest.fixture
def registry(demo_converted, registry_at):
    yield registry_at(demo_converted)
    gc.collect()  # the test's vLLM engine: its memory back before the next one is built


def _recipe(model: Path, out: Path, monkeypatch, options: bool = True, **overrides):
    from qwenvl.eval import vllm_backend
    from qwenvl.train import grpo
    from qwenvl.train.grpo_arguments import parse_grpo_arguments

    monkeypatch.setattr(vllm_backend, "weight_sync_problem", lambda device=None: None)  # see the docstring
    if not options:
        monkeypatch.setattr(grpo, "rollout_engine_options", lambda plan, device: {"enforce_eager": True})
    recipe = grpo.GRPORecipe(parse_grpo_arguments(_args(model, out, **overrides)))
    recipe.setup()
    recipe.trainer.vllm_generation.sync_weights = lambda: None
    return recipe


def test_use_vllm_is_refused_on_this_build_with_the_reason(tiny32, registry, tmp_path):
    from qwenvl.train.arguments import ArgumentError
    from qwenvl.train.grpo_arguments import parse_grpo_arguments

    with pytest.raises(ArgumentError, match="cannot load new weights"):
        parse_grpo_arguments(_args(tiny32, tmp_path, use_vllm="True"))


@pytest.mark.timeout(600)
def test_vllm_rollouts_see_the_training_prompts_and_rewards_are_logged(
    tiny32, registry, tmp_path, monkeypatch
):
    """Rollout prompts (one- and three-image records at 16 visual tokens, chromosome at 64) are the token ids
    the trainer scores, image for image; without the toolkit's engine options vLLM resizes the fitted images
    again and the prompts differ. Then one GRPO step: per-task-type rewards in train_log.jsonl."""
    from trl.data_utils import prepare_multimodal_messages

    from qwenvl.train.grpo import processor_limits_open

    overrides = {
        "use_vllm": "True",
        "vllm_max_model_length": "2048",
        "beta": "0",
        "max_steps": "1",
        "max_pixels": "16384",
        "dataset_use": "flare_retino%50,flare_neojaundice%50,flare_chromosome%50@64",
    }
    recipe = _recipe(tiny32, tmp_path / "run", monkeypatch, **overrides)
    trainer, dataset = recipe.trainer, recipe.train_dataset
    items = [dataset[i] for i in range(len(dataset))]
    assert sorted({len(x["images"]) for x in items}) == [1, 3]
    prompts = [prepare_multimodal_messages(x["prompt"], images=x["images"]) for x in items]
    with processor_limits_open(trainer.processing_class):  # as in the trainer's rollout step
        prompt_ids, images, _ = trainer._tokenize_prompts(prompts)
    seen, _, _, _ = trainer.vllm_generation.generate(
        prompts=prompt_ids, images=images, num_generations=1, profiler=contextlib.nullcontext()
    )
    assert [list(p) for p in seen] == [list(p) for p in prompt_ids]
    recipe.train()
    steps = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines() if x]
    logged = next(s for s in steps if "loss" in s)
    tasks = {k.split("/", 1)[1] for k in logged if k.startswith("reward_task/")}
    assert tasks and tasks <= {"classification", "instance_detection"}  # the step's prompts' task types
    assert {f"answer_task/{t}" for t in tasks} | {"rewards/answer/mean", "rewards/format/mean"} <= set(logged)
    assert recipe.run_info["grpo"]["sampling"]["rollout_engine"] == "vllm"


def test_without_the_engine_options_vllm_resizes_the_prompt_images(tiny32, registry, tmp_path, monkeypatch):
    from trl.data_utils import prepare_multimodal_messages

    from qwenvl.train.grpo import processor_limits_open

    overrides = {"use_vllm": "True", "vllm_max_model_length": "2048", "beta": "0", "max_pixels": "16384"}
    recipe = _recipe(tiny32, tmp_path / "run", monkeypatch, options=False, **overrides)
    trainer, dataset = recipe.trainer, recipe.train_dataset
    prompts = [
        prepare_multimodal_messages(dataset[i]["prompt"], images=dataset[i]["images"]) for i in range(2)
    ]
    with processor_limits_open(trainer.processing_class):  # as in the trainer's rollout step
        prompt_ids, images, _ = trainer._tokenize_prompts(prompts)
    seen, _, _, _ = trainer.vllm_generation.generate(
        prompts=prompt_ids, images=images, num_generations=1, profiler=contextlib.nullcontext()
    )
    # the tiny processor's own lower limit (64 visual tokens) enlarges every image of at most 16
    assert all(len(s) > len(p) for s, p in zip(seen, prompt_ids))
