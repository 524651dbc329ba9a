"""Attention implementations for packed training, chosen by what is installed.

A packed batch is ONE row of several samples whose text positions (row 0 of the collator's position ids) restart
at 0 at each sample. Under transformers' ``"sdpa"`` a packed row becomes a dense 4-D block-diagonal mask
(``L x L``): PyTorch then cannot use its flash kernel and memory grows with the square of the pack.

* ``"flash_attention_2"`` (the ``flash_attn`` package, CUDA): transformers derives ``cu_seqlens`` from the
  position ids and calls the varlen kernel - no mask at all.
* ``"sdpa_packed"`` (registered here, works everywhere): the same boundaries, taken from the position ids, and
  no mask: on CUDA one call of PyTorch's own varlen flash kernel (``torch.nn.attention.varlen.varlen_attn``)
  when it is there, else one causal SDPA call per sample (``is_causal=True``, no mask tensor, so the flash /
  memory-efficient SDPA kernels apply). Unpacked batches (padding mask, generation with a cache, the vision
  tower) go to plain SDPA unchanged.
* ``"sdpa"``: transformers' own (dense block-diagonal mask when packed).

``ATTN_IMPL`` / ``--attn_implementation`` force one; ``auto`` (or nothing) picks the first available of
:data:`PREFERENCE`.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

from qwenvl.compat import register_attention, torch_varlen_attn

logger = logging.getLogger(__name__)

PACKED_SDPA = "sdpa_packed"
PREFERENCE = ("flash_attention_2", PACKED_SDPA, "sdpa")
# How to get what is missing, offline: a wheel folder brought to the machine.
INSTALL_HINTS = {
    "flash_attention_2": "pip install --no-index --find-links WHEEL_DIR flash-attn (CUDA, matching torch)",
    "deepspeed": "pip install --no-index --find-links WHEEL_DIR deepspeed",
}


def _segments(position_ids: torch.Tensor) -> list[int]:
    """Sample lengths of one packed row: a new sample starts wherever the position does not go up by one."""
    starts = torch.nonzero(position_ids[1:] - position_ids[:-1] != 1).flatten() + 1
    bounds = [0, *starts.tolist(), int(position_ids.shape[0])]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def _dense_fallback_mask(attention_mask: torch.Tensor, q_len: int, kv_len: int) -> torch.Tensor:
    """Boolean ``(B, 1, q, kv)`` causal mask with padding (unpacked batches only, like transformers' SDPA)."""
    device = attention_mask.device
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    kv_pos = torch.arange(kv_len, device=device)[None, :]
    causal = kv_pos <= q_pos
    padding = attention_mask[:, -kv_len:].bool()[:, None, None, :]
    return causal[None, None] & padding


def packed_sdpa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``query/key/value`` ``(B, heads, L, dim)`` -> ``((B, L, heads, dim), None)`` like transformers' SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.pop("position_ids", None)
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is not None and attention_mask.ndim == 2:
        if bool(attention_mask.all()):
            attention_mask = None
        else:
            attention_mask = _dense_fallback_mask(attention_mask, q_len, kv_len)
    packed = (
        causal
        and attention_mask is None
        and position_ids is not None
        and position_ids.ndim == 2
        and q_len == kv_len
        and q_len > 1
    )
    if not packed:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    outputs = []
    for row in range(query.shape[0]):
        lengths = _segments(position_ids[row % position_ids.shape[0]])
        q, k, v = query[row : row + 1], key[row : row + 1], value[row : row + 1]
        if len(lengths) == 1:
            out, _ = sdpa_attention_forward(
                module, q, k, v, None, dropout=dropout, scaling=scaling, is_causal=True, **kwargs
            )
        elif query.is_cuda and dropout == 0.0 and torch_varlen_attn() is not None:
            out = _varlen(q, k, v, lengths, scaling)
        else:
            parts = [
                sdpa_attention_forward(
                    module, qs, ks, vs, None, dropout=dropout, scaling=scaling, is_causal=True, **kwargs
                )[0]
                for qs, ks, vs in zip(*(t.split(lengths, dim=2) for t in (q, k, v)))
            ]
            out = torch.cat(parts, dim=1)
        outputs.append(out)
    return torch.cat(outputs, dim=0), None


def _varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: list[int], scale: float | None):
    """One row through PyTorch's varlen flash kernel: ``(1, H, L, D)`` -> ``(1, L, H, D)``."""
    cu = torch.tensor([0, *lengths], device=q.device, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    longest = max(lengths)
    out = torch_varlen_attn()(
        q[0].transpose(0, 1),
        k[0].transpose(0, 1),
        v[0].transpose(0, 1),
        cu,
        cu,
        longest,
        longest,
        scale=scale,
        enable_gqa=k.shape[1] != q.shape[1],
    )
    return out.unsqueeze(0)


def register_packed_sdpa() -> None:
    """Make ``"sdpa_packed"`` a valid ``attn_implementation`` (idempotent). Its mask function is the flash one:
    no 4-D mask, only the 2-D padding mask when there is padding."""
    register_attention(PACKED_SDPA, packed_sdpa_attention_forward, mask="flash_attention_2")


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()


def available_implementations() -> dict[str, str | None]:
    """Each implementation -> ``None`` when usable here, else why not and how to provide it offline."""
    return {
        "flash_attention_2": None
        if flash_attn_available()
        else ("needs CUDA; " if not torch.cuda.is_available() else "")
        + f"flash_attn not importable: {INSTALL_HINTS['flash_attention_2']}",
        PACKED_SDPA: None,
        "sdpa": None,
        "eager": None,
    }


def select_attn_implementation(requested: str | None = None) -> str:
    """``requested`` as given (``sdpa_packed`` registered first), or for ``None`` / ``"auto"`` the first usable
    of :data:`PREFERENCE`. The choice is logged."""
    if requested in (None, "", "auto"):
        usable = available_implementations()
        choice = next(name for name in PREFERENCE if usable[name] is None)
        logger.info(
            "attention: %s (auto; flash_attention_2: %s)", choice, usable["flash_attention_2"] or "ok"
        )
    else:
        choice = requested
        logger.info("attention: %s (requested)", choice)
    if choice == PACKED_SDPA:
        register_packed_sdpa()
    return choice
