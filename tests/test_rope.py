"""mRoPE position ids: hand-computed values, and equality with the model's own get_rope_index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qwenvl.data.processing import record_to_messages, render_text
from qwenvl.data.rope import mrope_position_ids
from qwenvl.model import load_model, load_processor

IMG = 9  # a stand-in image token id for the hand-computed cases


@pytest.fixture(scope="module")
def processor(tiny_dir: Path):
    return load_processor(tiny_dir, min_pixels=4 * 1024, max_pixels=64 * 1024)


@pytest.fixture(scope="module")
def model(tiny_dir: Path):
    return load_model(tiny_dir, dtype=torch.float32)


def test_text_only_is_sequential_on_all_rows() -> None:
    ids = mrope_position_ids(torch.tensor([5, 6, 7, 8]), None, IMG)
    assert ids.tolist() == [[0, 1, 2, 3]] * 3


def test_one_image_hand_computed() -> None:
    # 2 text tokens, an image of 4x6 patches (2x3 merged = 6 tokens), 2 text tokens.
    input_ids = torch.tensor([5, 6] + [IMG] * 6 + [7, 8])
    ids = mrope_position_ids(input_ids, torch.tensor([[1, 4, 6]]), IMG, spatial_merge_size=2)
    assert ids.tolist() == [
        [0, 1, 2, 2, 2, 2, 2, 2, 5, 6],  # t = start; text resumes at start + max(2, 3) = 5
        [0, 1, 2, 2, 2, 3, 3, 3, 5, 6],  # h = start + merged row
        [0, 1, 2, 3, 4, 2, 3, 4, 5, 6],  # w = start + merged column
    ]


def test_adjacent_images_are_split_by_their_grids() -> None:
    # Two images back to back: 1x1 merged (2x2 patches) then 1x2 merged (2x4 patches).
    input_ids = torch.tensor([5] + [IMG] * 3 + [6])
    ids = mrope_position_ids(input_ids, torch.tensor([[1, 2, 2], [1, 2, 4]]), IMG)
    assert ids.tolist() == [[0, 1, 2, 2, 4], [0, 1, 2, 2, 4], [0, 1, 2, 3, 4]]


def test_token_grid_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="holds 5 image tokens but image_grid_thw"):
        mrope_position_ids(torch.tensor([5] + [IMG] * 5), torch.tensor([[1, 4, 6]]), IMG)


def _record(n_images: int) -> dict:
    tags = "<image>\n" * n_images
    return {
        "image": [f"/x/{k}.png" for k in range(n_images)],
        "conversations": [
            {"from": "human", "value": f"{tags}Describe the finding."},
            {"from": "gpt", "value": "No abnormality."},
        ],
    }


@pytest.mark.parametrize(
    "sizes",
    [
        [],
        [(300, 100)],
        [(40, 900), (128, 128)],
        [(64, 64), (500, 300), (33, 97)],
    ],
    ids=["0 images", "1 image", "2 images", "3 images"],
)
def test_equals_model_get_rope_index(processor, model, sizes: list[tuple[int, int]]) -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    text = render_text(record_to_messages(_record(len(sizes))), processor)
    batch = processor(text=[text], images=images or None, return_tensors="pt")
    grid = batch.get("image_grid_thw")
    mine = mrope_position_ids(batch["input_ids"][0], grid, processor.image_token_id)
    theirs, _ = model.model.get_rope_index(
        batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"], image_grid_thw=grid
    )
    assert mine.shape == (3, batch["input_ids"].shape[1])
    assert torch.equal(mine, theirs[:, 0])
    if sizes:  # the images really are 2-D spans: h and w rows differ somewhere
        assert not torch.equal(mine[1], mine[2])
