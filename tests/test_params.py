"""Freeze flags act on parameters; optimizer groups carry the per-module learning rates."""

from __future__ import annotations

import pytest
import torch
import transformers

from qwenvl.model.tiny import tiny_config
from qwenvl.train.params import (
    LLM,
    MERGER,
    VISION,
    apply_freeze,
    group_learning_rates,
    optimizer_param_groups,
    parameter_counts,
    parameter_group,
    parameter_table,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return transformers.Qwen3VLForConditionalGeneration(tiny_config())


def test_parameter_groups_by_name():
    assert parameter_group("model.visual.blocks.0.attn.qkv.weight") == VISION
    assert parameter_group("model.visual.patch_embed.proj.weight") == VISION
    assert parameter_group("model.visual.pos_embed.weight") == VISION
    assert parameter_group("model.visual.merger.linear_fc1.weight") == MERGER
    assert parameter_group("model.visual.deepstack_merger_list.1.norm.weight") == MERGER
    assert parameter_group("model.language_model.layers.0.mlp.up_proj.weight") == LLM
    assert parameter_group("lm_head.weight") == LLM
    # PEFT-style prefixes do not change the group.
    assert parameter_group("base_model.model.model.visual.merger.linear_fc2.bias") == MERGER


@pytest.mark.parametrize(
    "flags",
    [(False, True, True), (True, False, False), (False, False, True), (True, True, True)],
)
def test_freeze_flags_set_requires_grad_per_parameter(model, flags):
    apply_freeze(model, *flags)
    wanted = dict(zip((VISION, MERGER, LLM), flags))
    for name, p in model.named_parameters():
        assert p.requires_grad == wanted[parameter_group(name)], name
    counts = parameter_counts(model)
    for group, on in wanted.items():
        assert counts[group]["total"] > 0
        assert counts[group]["trainable"] == (counts[group]["total"] if on else 0)


def test_tied_embeddings_counted_once_and_follow_llm(model):
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    apply_freeze(model, False, True, False)
    assert not model.lm_head.weight.requires_grad
    total = sum(c["total"] for c in parameter_counts(model).values())
    assert total == sum(p.numel() for p in model.parameters())  # parameters() de-duplicates tied tensors
    table = parameter_table(model, group_learning_rates(1e-5, None, 2e-5))
    assert "merger" in table and "2.00e-05" in table


def test_optimizer_groups_carry_learning_rates_and_decay(model):
    apply_freeze(model, True, True, True)
    lrs = group_learning_rates(1e-5, 3e-6, 2e-5)
    assert lrs == {VISION: 3e-6, MERGER: 2e-5, LLM: 1e-5}
    decay = {n for n, p in model.named_parameters() if p.ndim > 1}
    groups = optimizer_param_groups(model, lrs, 0.01, decay)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"vision", "vision_no_decay", "merger", "merger_no_decay", "llm", "llm_no_decay"}
    assert by_name["vision"]["lr"] == 3e-6 and by_name["merger_no_decay"]["lr"] == 2e-5
    assert by_name["llm"]["weight_decay"] == 0.01 and by_name["llm_no_decay"]["weight_decay"] == 0.0
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len([p for p in model.parameters() if p.requires_grad])
    # Frozen groups are absent.
    apply_freeze(model, False, True, True)
    names = {g["name"] for g in optimizer_param_groups(model, lrs, 0.01, decay)}
    assert not any(n.startswith("vision") for n in names)
