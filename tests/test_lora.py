"""LoRA: adapter placement on the tiny model, argument checks, a tiny LoRA training run (only adapters and the
enabled groups change), and merge_lora.py (merged logits == adapter logits; stock Auto classes reload and
generate)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from qwenvl.model import load_model
from qwenvl.train.arguments import ArgumentError, parse_arguments
from qwenvl.train.lora import (
    LoraSettings,
    adapter_base_model,
    full_train_modules,
    lora_target_names,
    names_regex,
)

LLM_TARGETS = [
    f"model.language_model.layers.{k}.{m}"
    for k in (0, 1)
    for m in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
]
MERGERS = [
    "model.visual.merger",
    "model.visual.deepstack_merger_list.0",
    "model.visual.deepstack_merger_list.1",
]


@pytest.fixture(scope="module")
def tiny_model(tiny_dir: Path):
    return load_model(tiny_dir, dtype=torch.float32)


# ------------------------------------------------------------------------------------------ placement
def test_default_targets_are_the_llm_linears_only(tiny_model) -> None:
    assert lora_target_names(tiny_model, LoraSettings()) == LLM_TARGETS
    with_vision = lora_target_names(tiny_model, LoraSettings(vision=True))
    assert with_vision[: len(LLM_TARGETS)] == LLM_TARGETS
    assert with_vision[len(LLM_TARGETS) :] == [
        f"model.visual.blocks.{k}.{m}"
        for k in (0, 1)
        for m in ("attn.qkv", "attn.proj", "mlp.linear_fc1", "mlp.linear_fc2")
    ]
    assert lora_target_names(tiny_model, LoraSettings(targets=("q_proj", "v_proj"), llm=True))[:2] == [
        "model.language_model.layers.0.self_attn.q_proj",
        "model.language_model.layers.0.self_attn.v_proj",
    ]
    with pytest.raises(ValueError, match="--lora_target_modules qkv_proj: no such linear layer"):
        lora_target_names(tiny_model, LoraSettings(targets=("q_proj", "qkv_proj")))


def test_regex_selects_exactly_the_targets(tiny_model) -> None:
    regex = names_regex(LLM_TARGETS)
    assert r"model\.language_model\.layers\.\d+\.self_attn\.q_proj" in regex
    matched = [n for n, _ in tiny_model.named_modules() if re.fullmatch(regex, n)]
    assert matched == LLM_TARGETS


def test_full_train_modules_follow_the_tune_flags(tiny_model) -> None:
    assert full_train_modules(tiny_model, tune_vision=False, tune_merger=True) == MERGERS
    assert full_train_modules(tiny_model, tune_vision=False, tune_merger=False) == []
    assert full_train_modules(tiny_model, tune_vision=True, tune_merger=False) == [
        "model.visual.patch_embed",
        "model.visual.pos_embed",
        "model.visual.blocks.0",
        "model.visual.blocks.1",
    ]


def test_lora_argument_checks(tmp_path: Path) -> None:
    base = ["--output_dir", str(tmp_path), "--dataset_use", "x"]
    args = parse_arguments(
        base + ["--lora_enable", "True", "--lora_vision", "True", "--tune_mm_llm", "False"]
    ).lora
    assert args.lora_r == 64 and args.lora_alpha == 128 and args.lora_dropout == 0.05
    with pytest.raises(ArgumentError) as e:
        parse_arguments(
            base
            + ["--lora_enable", "True", "--lora_vision", "True", "--tune_mm_vision", "True", "--lora_r", "0"]
        )
    msg = str(e.value)
    assert msg.startswith("2 problem(s)")
    assert "would train the vision blocks twice" in msg and "need r >= 1" in msg
    with pytest.raises(ArgumentError, match="--lora_vision needs --lora_enable True"):
        parse_arguments(base + ["--lora_vision", "True"])


# ------------------------------------------------------------------------------- train, merge, reload
@pytest.fixture(scope="module")
def lora_run(tiny_dir, demo_converted, tmp_path_factory) -> Path:
    """Two LoRA steps (r 4) with the mergers fully trained; the output folder."""
    import os

    import qwenvl.data as registry
    from qwenvl.train.train_qwen import main

    out = tmp_path_factory.mktemp("lora") / "run"
    previous = os.environ.get("FLARE25_CONVERTED_DIR")
    os.environ["FLARE25_CONVERTED_DIR"] = str(demo_converted)
    registry.refresh_registry()
    try:
        opts = {
            "model_name_or_path": str(tiny_dir),
            "dataset_use": "flare_neojaundice%50,flare_retino%50",
            "output_dir": str(out),
            "max_steps": "2",
            "per_device_train_batch_size": "2",
            "learning_rate": "0.05",
            "lora_enable": "True",
            "lora_r": "4",
            "lora_alpha": "8",
            "lora_dropout": "0",
            "tune_mm_mlp": "True",
            "logging_steps": "1",
            "save_strategy": "steps",
            "save_steps": "2",
            "report_to": "none",
            "bf16": "False",
            "dataloader_num_workers": "0",
            "min_pixels": "1024",
            "max_pixels": "16384",
        }
        assert main([x for k, v in opts.items() for x in (f"--{k}", v)]) == 0
    finally:
        if previous is None:
            os.environ.pop("FLARE25_CONVERTED_DIR", None)
        else:
            os.environ["FLARE25_CONVERTED_DIR"] = previous
        registry.refresh_registry()
    return out


def test_checkpoint_holds_adapter_mergers_processor_and_run_info(lora_run: Path, tiny_dir: Path) -> None:
    ckpt = lora_run / "checkpoint-2"
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "processor_config.json",
        "run_info.json",
    ):
        assert (ckpt / name).is_file(), name
    assert not (ckpt / "model.safetensors").exists()
    assert adapter_base_model(ckpt) == str(tiny_dir)
    keys = set(load_file(str(ckpt / "adapter_model.safetensors")))
    lora_modules = {
        re.sub(r"^base_model\.model\.|\.lora_[AB]\.weight$", "", k) for k in keys if ".lora_" in k
    }
    assert lora_modules == set(LLM_TARGETS)
    others = {k for k in keys if ".lora_" not in k}
    assert others and all(any(k.startswith(f"base_model.model.{m}.") for m in MERGERS) for k in others)
    config = json.loads((ckpt / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    assert sorted(config["modules_to_save"]) == sorted(MERGERS)


@pytest.fixture(scope="module")
def merged(lora_run: Path, tmp_path_factory) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "merge_lora", Path(__file__).parents[1] / "scripts" / "merge_lora.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("merged") / "model"
    assert module.main(["--adapter_dir", str(lora_run / "checkpoint-2"), "--output_dir", str(out)]) == 0
    return out


def test_only_adapted_layers_and_mergers_changed(merged: Path, tiny_dir: Path) -> None:
    base = load_file(str(tiny_dir / "model.safetensors"))
    after = load_file(str(merged / "model.safetensors"))
    assert set(after) == set(base)
    trained = tuple(f"{m}.weight" for m in LLM_TARGETS) + tuple(f"{m}." for m in MERGERS)
    changed = {k for k in base if not torch.equal(base[k], after[k])}
    unchanged = set(base) - changed
    assert {f"{m}.weight" for m in LLM_TARGETS} <= changed
    assert any(k.startswith("model.visual.merger.") for k in changed)
    assert all(k.startswith(trained) for k in changed)
    assert "model.language_model.embed_tokens.weight" in unchanged
    assert "model.visual.blocks.0.attn.qkv.weight" in unchanged


def _inputs(processor):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (96, 64, 3), dtype=np.uint8))
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Grade this fundus image."}]}
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=[text], images=[image], return_tensors="pt")


def test_merged_logits_equal_adapter_logits_and_auto_classes_generate(
    merged: Path, lora_run: Path, tiny_dir
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(merged)
    assert processor.image_processor.size["longest_edge"] == 16384  # the run's pixel limits travelled along
    inputs = _inputs(processor)
    model = AutoModelForImageTextToText.from_pretrained(merged).eval()
    adapter = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tiny_dir), str(lora_run / "checkpoint-2")
    ).eval()
    base = AutoModelForImageTextToText.from_pretrained(tiny_dir).eval()
    with torch.no_grad():
        merged_logits = model(**inputs).logits
        adapter_logits = adapter(**inputs).logits
        base_logits = base(**inputs).logits
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-4, rtol=0)
    assert (merged_logits - base_logits).abs().max() > 1e-3  # the adapter really changed the model
    out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 3)
    info = json.loads((merged / "run_info.json").read_text())
    assert info["merged_lora"]["base_model"] == str(tiny_dir)


def test_merge_refuses_a_full_checkpoint(tiny_dir: Path, tmp_path: Path) -> None:
    from qwenvl.train.lora import merge_adapter

    with pytest.raises(FileNotFoundError, match="has no adapter_config.json: it is not a LoRA checkpoint"):
        merge_adapter(tiny_dir, tmp_path / "out")
