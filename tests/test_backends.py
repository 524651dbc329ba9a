"""``--backend`` plumbing and the vLLM pieces that need no vLLM: the flags of every command that generates, the
engine's keywords, GRPO's rollout options, the tiny model's head_dim option. The backend itself is tested for
real in tests/test_vllm_backend.py and tests/test_vllm_grpo.py (in envs/vllm-cpu)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from qwenvl.flare.pixels import PER_DATASET, BudgetPlan, ImageBudget

REPO = Path(__file__).resolve().parents[1]
PLAN = BudgetPlan(PER_DATASET, ImageBudget(1024, 50176), {"chromosome": ImageBudget(4096, 1327104)}, {})


def _no_vllm() -> None:
    from qwenvl.eval.vllm_backend import vllm_available

    if vllm_available():
        pytest.skip("vLLM is installed here: the error path is for environments without it")


# ---------------------------------------------------------------------------------------------- tiny model
def test_tiny_model_head_dim_option_keeps_the_default_and_scales_the_rope_section():
    from qwenvl.model.tiny import TINY_TEXT_CONFIG, VLLM_CPU_HEAD_DIM, tiny_config, tiny_text_config

    assert tiny_text_config() == TINY_TEXT_CONFIG  # the default model is the one it always was
    wide = tiny_config(VLLM_CPU_HEAD_DIM).text_config
    assert wide.head_dim == 32 and wide.hidden_size == 64
    assert wide.rope_parameters["mrope_section"] == [8, 4, 4]  # sums to head_dim / 2
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny_text_config(24)
    import transformers

    torch.manual_seed(0)
    model = transformers.Qwen3VLForConditionalGeneration(tiny_config(VLLM_CPU_HEAD_DIM)).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[151644, 872, 198, 9707]])).logits
    assert logits.shape == (1, 4, 151936) and torch.isfinite(logits).all()
    assert model.model.language_model.layers[0].self_attn.q_proj.out_features == 4 * 32


# ------------------------------------------------------------------------------------------ engine keywords
def test_engine_keywords_carry_the_plans_largest_budget_and_eager_mode_on_the_cpu():
    from qwenvl.eval.vllm_backend import EngineSettings, engine_kwargs, largest_budget

    assert largest_budget(PLAN) == ImageBudget(1024, 1327104)
    cpu = engine_kwargs("/m", "float32", "cpu", PLAN, EngineSettings(max_num_seqs=8))
    assert cpu["mm_processor_kwargs"] == {"size": {"shortest_edge": 1024, "longest_edge": 1327104}}
    assert cpu["limit_mm_per_prompt"] == {"image": 8, "video": 0} and cpu["max_num_seqs"] == 8
    assert cpu["enforce_eager"] is True and "gpu_memory_utilization" not in cpu
    assert cpu["structured_outputs_config"] == {"backend": "xgrammar"} and cpu["generation_config"] == "vllm"
    gpu = engine_kwargs("/m", "bfloat16", "cuda", PLAN, EngineSettings(gpu_memory_utilization=0.5))
    assert (
        gpu["enforce_eager"] is False and gpu["gpu_memory_utilization"] == 0.5 and gpu["max_num_seqs"] == 64
    )
    with pytest.raises(ValueError, match="batch_size"):
        engine_kwargs("/m", "float32", "cpu", PLAN, EngineSettings(max_num_seqs=0))


def test_only_a_gpu_engine_takes_new_weights():
    from qwenvl.eval.vllm_backend import weight_sync_problem

    assert weight_sync_problem("cuda") is None
    assert "CUDA GPU" in weight_sync_problem("cpu")


# ---------------------------------------------------------------------------------------------- commands
def test_evaluate_takes_backend_and_defaults_the_batch_size_per_backend(tmp_path):
    from qwenvl.eval.backends import default_batch_size
    from qwenvl.eval.cli import parse_evaluate_args

    base = ["--model_path", str(tmp_path), "--output_dir", str(tmp_path / "out")]
    assert parse_evaluate_args(base).backend == "hf" and parse_evaluate_args(base).batch_size is None
    assert parse_evaluate_args([*base, "--backend", "vllm"]).backend == "vllm"
    assert (default_batch_size("hf"), default_batch_size("vllm")) == (8, 64)
    with pytest.raises(SystemExit):
        parse_evaluate_args(["--baseline", "constant", "--output_dir", str(tmp_path), "--backend", "vllm"])


def test_backend_vllm_without_vllm_says_how_to_install_it(tiny_dir, tmp_path, capsys):
    _no_vllm()
    from qwenvl.eval.cli import infer_main
    from qwenvl.eval.submission import main as submission_main

    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(image)
    assert (
        infer_main(
            ["--model_path", str(tiny_dir), "--image", str(image), "--question", "?", "--backend", "vllm"]
        )
        == 2
    )
    assert "uv sync --project envs/vllm" in capsys.readouterr().err
    inputs = tmp_path / "in"
    inputs.mkdir()
    argv = ["--input_dir", str(inputs), "--output_dir", str(tmp_path), "--model_path", str(tiny_dir)]
    assert submission_main([*argv, "--backend", "vllm"]) == 2
    assert "envs/vllm" in capsys.readouterr().err


def test_load_generator_hf_reports_backend_batch_and_budgets(tiny_dir):
    from qwenvl.eval.backends import load_generator
    from qwenvl.eval.generate import BatchGenerator

    setup = load_generator(tiny_dir, "hf", max_pixels=16384, device="cpu", progress=False)
    assert isinstance(setup.generator, BatchGenerator) and setup.generator.batch_size == 8
    info = setup.info()
    assert (info["backend"], info["device"], info["batch_size"]) == ("hf", "cpu", 8)
    assert info["pixel_budgets"]["global"]["max_pixels"] == 16384
    with pytest.raises(ValueError, match="unknown backend"):
        load_generator(tiny_dir, "tgi")


def test_predict_sh_passes_backend_and_batch_size_only_when_set(tmp_path):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_FILE"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    args_file = tmp_path / "args.txt"
    base = {**os.environ, "PYTHON": str(fake), "ARGS_FILE": str(args_file), "OUTPUT_DIR": str(tmp_path / "o")}
    for extra, expected in (
        ({}, ["--backend", "hf"]),
        ({"BACKEND": "vllm", "BATCH_SIZE": "32"}, ["--backend", "vllm"]),
    ):
        proc = subprocess.run(
            ["sh", "docker/predict.sh"], cwd=REPO, env={**base, **extra}, capture_output=True
        )
        assert proc.returncode == 0, proc.stderr
        args = args_file.read_text().split("\n")
        i = args.index("--backend")
        assert args[i : i + 2] == expected
        assert ("--batch_size" in args) == ("BATCH_SIZE" in extra)


# -------------------------------------------------------------------------------------------------- GRPO
def test_grpo_rollouts_collapse_image_runs_and_open_the_engines_image_limits():
    from qwenvl.train.grpo import collapse_image_runs, rollout_engine_options, with_collapsed_image_runs

    pad = 151655
    assert collapse_image_runs([1, pad, pad, pad, 2, pad, 3, pad, pad], pad) == [1, pad, 2, pad, 3, pad]
    seen = []
    generate = with_collapsed_image_runs(
        lambda prompts, images, **kw: seen.append((prompts, images, kw)), pad
    )
    generate(prompts=[[1, pad, pad, 2]], images=[["img"]], num_generations=2)
    generate(prompts=[[1, pad, pad, 2]], images=None)  # text-only prompts pass as they are
    assert seen == [([[1, pad, 2]], [["img"]], {"num_generations": 2}), ([[1, pad, pad, 2]], None, {})]
    options = rollout_engine_options(PLAN, "cpu")
    assert options["mm_processor_kwargs"] == {"size": {"shortest_edge": 1024, "longest_edge": 1327104}}
    assert options["limit_mm_per_prompt"] == {"image": 8, "video": 0} and options["enforce_eager"] is True
    assert "enforce_eager" not in rollout_engine_options(PLAN, "cuda")


def test_vllm_engine_options_reach_trls_engine_only_while_active(monkeypatch):
    pytest.importorskip("trl")
    import trl.generation.vllm_generation as generation

    from qwenvl.train.grpo import vllm_engine_options

    calls = []
    monkeypatch.setattr(generation, "LLM", lambda **kw: calls.append(kw), raising=False)
    original = generation.LLM
    with vllm_engine_options({"enforce_eager": True, "max_model_len": 99}):
        generation.LLM(model="m", max_model_len=4096)
    assert generation.LLM is original
    generation.LLM(model="m")
    assert calls == [{"model": "m", "max_model_len": 99, "enforce_eager": True}, {"model": "m"}]


def test_use_vllm_and_the_vllm_generation_eval_need_vllm(tmp_path):
    _no_vllm()
    from qwenvl.train.arguments import ArgumentError
    from qwenvl.train.grpo_arguments import parse_grpo_arguments

    with pytest.raises(ArgumentError, match=r"--use_vllm: vLLM is not installed here.*envs/vllm"):
        parse_grpo_arguments(
            ["--dataset_use", "flare_retino", "--output_dir", str(tmp_path), "--use_vllm", "True"]
        )
    from qwenvl.train.arguments import GenerationEvalArguments, _generation_backend_problems

    problems = _generation_backend_problems(
        GenerationEvalArguments(generation_eval_backend="vllm"), None, None
    )
    assert len(problems) == 1 and "envs/vllm" in problems[0]
    assert (
        "choose hf or vllm"
        in _generation_backend_problems(GenerationEvalArguments(generation_eval_backend="tgi"), None, None)[0]
    )


# ------------------------------------------------------------------------------------------- gpu_check
def test_gpu_check_adds_the_vllm_step_only_where_vllm_imports(monkeypatch):
    from qwenvl.bench import gpu_check

    real = gpu_check.importlib.util.find_spec
    for present in (False, True):
        monkeypatch.setattr(
            gpu_check.importlib.util,
            "find_spec",
            lambda name, present=present: (
                (real("json") if present else None) if name == "vllm" else real(name)
            ),
        )
        steps = gpu_check.default_steps()
        assert steps[: len(gpu_check.STEPS) - 1] == gpu_check.STEPS[1:]
        assert (gpu_check.VLLM_STEP in steps) is present
    # asked for without vLLM: skipped with the install command, the HF generation step unchanged
    monkeypatch.setattr(
        gpu_check.importlib.util, "find_spec", lambda name: None if name == "vllm" else real(name)
    )
    args = gpu_check.parse_args(["--tiny", "--only", "generation,vllm_generation"])
    specs = {s["name"]: s for s in gpu_check.step_specs(args, {}, "/m", {})}
    assert list(specs) == ["generation", "vllm_generation"]
    assert "uv sync --project envs/vllm" in specs["vllm_generation"]["skip"]
    assert specs["vllm_generation"]["batch_size"] == specs["generation"]["batch_size"] == 4
    assert "skip" not in specs["generation"]


def test_gpu_check_table_puts_vllm_rows_beside_the_hf_rows():
    from qwenvl.bench import gpu_check

    def batch(samples_per_s):
        return {
            "constrained": True,
            "batch_size": 8,
            "max_new_tokens": 16,
            "generated_tokens": 24,
            "parsed": 8,
            "samples_per_s": samples_per_s,
            "tokens_per_s": 3 * samples_per_s,
            "seconds": 8 / samples_per_s,
            "peak_memory_mb": None,
            "mfu": None,
        }

    report = {
        "tiny": True,
        "budget_s": 420,
        "steps": {
            "generation": {"status": "ok", "attn_implementation": "sdpa", "batches": {"short": batch(4.0)}},
            "vllm_generation": {"status": "ok", "batches": {"short": batch(16.0)}},
        },
    }
    table = gpu_check.markdown(report)
    assert (
        "| generation short (batch 8, constrained, <= 16 new, 24 generated, 8/8 parsed) | ok | sdpa | 4.00 "
        in table
    )
    assert (
        "| vllm generation short (batch 8, constrained, <= 16 new, 24 generated, 8/8 parsed) | ok | vLLM's | 16.00 "
        in table
    )
    del report["steps"]["vllm_generation"]
    assert "vllm" not in gpu_check.markdown(report)  # no vLLM row where the step did not run
