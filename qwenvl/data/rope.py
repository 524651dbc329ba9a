"""Qwen3-VL multimodal rotary position ids (mRoPE) for one unpadded sample.

Qwen3-VL rotates each query/key with three position ids: temporal ``t``, height ``h`` and width ``w``.

* Text tokens use the same running position on all three rows, one step per token.
* An image occupies ``(grid_h // merge) * (grid_w // merge)`` consecutive ``<|image_pad|>`` tokens (row-major over
  the merged grid). With ``start`` the running position when the image begins, its token at merged row ``r`` and
  column ``c`` gets ``t = start``, ``h = start + r``, ``w = start + c``.
* After the image the running position continues at ``start + max(grid_h, grid_w) // merge``.

The model computes the same ids itself (``Qwen3VLModel.get_rope_index``) only when it is given
``mm_token_type_ids``; the collators pass explicit ids instead, so this works with every transformers release
and with packed rows.
"""

from __future__ import annotations

import torch


def _text_ids(start: int, length: int) -> torch.Tensor:
    """``(3, length)`` ids for a text run beginning at running position ``start``."""
    return (torch.arange(length, dtype=torch.long) + start).unsqueeze(0).expand(3, -1)


def _image_ids(start: int, grid_t: int, merged_h: int, merged_w: int) -> torch.Tensor:
    """``(3, grid_t * merged_h * merged_w)`` ids for one image whose span begins at running position ``start``."""
    t = torch.arange(grid_t, dtype=torch.long).view(-1, 1, 1).expand(grid_t, merged_h, merged_w)
    h = torch.arange(merged_h, dtype=torch.long).view(1, -1, 1).expand(grid_t, merged_h, merged_w)
    w = torch.arange(merged_w, dtype=torch.long).view(1, 1, -1).expand(grid_t, merged_h, merged_w)
    return torch.stack([t, h, w]).reshape(3, -1) + start


def mrope_position_ids(
    input_ids: torch.LongTensor,
    image_grid_thw: torch.LongTensor | None,
    image_token_id: int,
    spatial_merge_size: int = 2,
) -> torch.LongTensor:
    """``(3, L)`` mRoPE position ids (rows t, h, w) for one unpadded sample ``input_ids`` of shape ``(L,)``.

    ``image_grid_thw`` (``(n, 3)``, the processor's patch grid of each image in order) must describe exactly the
    ``<|image_pad|>`` tokens of ``input_ids``: image ``i`` owns the next ``t * h * w // merge**2`` image tokens.
    Raises ``ValueError`` when the counts disagree (a sample whose image span was cut or mis-expanded).
    """
    if input_ids.dim() != 1:
        raise ValueError(f"input_ids must be 1-D (one unpadded sample), got shape {tuple(input_ids.shape)}")
    ids = input_ids.tolist()
    grids = [] if image_grid_thw is None else [tuple(int(x) for x in g) for g in image_grid_thw.tolist()]
    n_image_tokens = sum(1 for tok in ids if tok == image_token_id)
    expected = sum(t * (h // spatial_merge_size) * (w // spatial_merge_size) for t, h, w in grids)
    if n_image_tokens != expected:
        raise ValueError(
            f"the sample holds {n_image_tokens} image tokens but image_grid_thw {grids} describes {expected}; "
            "the text and the images were not processed together"
        )

    pieces: list[torch.Tensor] = []
    pos = 0  # running position (next text position)
    i = 0  # index into ids
    text_start = 0
    for grid_t, grid_h, grid_w in grids:
        merged_h, merged_w = grid_h // spatial_merge_size, grid_w // spatial_merge_size
        while ids[i] != image_token_id:  # the count check above guarantees an image token lies ahead
            i += 1
        if i > text_start:
            pieces.append(_text_ids(pos, i - text_start))
            pos += i - text_start
        n_tokens = grid_t * merged_h * merged_w
        if any(tok != image_token_id for tok in ids[i : i + n_tokens]):
            raise ValueError(
                f"image span at token {i} is not {n_tokens} consecutive image tokens (grid {grid_t, grid_h, grid_w})"
            )
        pieces.append(_image_ids(pos, grid_t, merged_h, merged_w))
        pos += max(merged_h, merged_w)
        i += n_tokens
        text_start = i
    if len(ids) > text_start:
        pieces.append(_text_ids(pos, len(ids) - text_start))
    if not pieces:
        return torch.zeros(3, 0, dtype=torch.long)
    return torch.cat(pieces, dim=1).contiguous()
