"""Pixel <-> Qwen3-VL 0-1000 grid boxes (qwenvl/flare/boxes.py)."""

from __future__ import annotations

import random

import pytest

from qwenvl.flare.boxes import convert_boxes, grid_to_pixel, is_box, pixel_to_grid

SIZES = [(37, 53), (100, 100), (333, 500), (640, 480), (1024, 768), (1999, 1500), (2000, 2000), (2000, 811)]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_round_trip_within_one_pixel_on_every_quarter_pixel(width: int, height: int) -> None:
    worst = 0.0
    for i in range(4 * max(width, height) + 1):
        x = min(i / 4, width)
        y = min(i / 4, height)
        back = grid_to_pixel(pixel_to_grid([x, y, x, y], width, height), width, height)
        worst = max(worst, abs(back[0] - x), abs(back[1] - y), abs(back[2] - x), abs(back[3] - y))
    assert worst <= 1.0
    # The bound boxes.py documents: half a grid step (max side / 2000) plus the 0.1 px output rounding.
    assert worst <= max(width, height) / 2000 + 0.05 + 1e-9


def test_round_trip_random_boxes_up_to_2000_px() -> None:
    rng = random.Random(1234)
    for _ in range(2000):
        w, h = rng.randint(16, 2000), rng.randint(16, 2000)
        # FLARE25 answers are integer pixels: within one pixel.
        x1, x2 = sorted(rng.randint(0, w) for _ in range(2))
        y1, y2 = sorted(rng.randint(0, h) for _ in range(2))
        grid = pixel_to_grid([x1, y1, x2, y2], w, h)
        assert all(isinstance(v, int) and 0 <= v <= 1000 for v in grid)
        back = grid_to_pixel(grid, w, h)
        assert max(abs(a - b) for a, b in zip(back, [x1, y1, x2, y2])) <= 1.0
        # Arbitrary real coordinates: half a grid step plus the 0.1 px output rounding.
        fx1, fx2 = sorted(rng.uniform(0, w) for _ in range(2))
        back = grid_to_pixel(pixel_to_grid([fx1, 0, fx2, 0], w, h), w, h)
        assert max(abs(back[0] - fx1), abs(back[2] - fx2)) <= max(w, h) / 2000 + 0.05 + 1e-9


def test_hand_computed_values() -> None:
    # 640 x 480: x / 640 * 1000 and y / 480 * 1000
    assert pixel_to_grid([64, 48, 320, 240], 640, 480) == [100, 100, 500, 500]
    assert pixel_to_grid([0, 0, 640, 480], 640, 480) == [0, 0, 1000, 1000]
    assert pixel_to_grid([10, 20, 30, 40], 200, 100) == [50, 200, 150, 400]
    assert grid_to_pixel([50, 200, 150, 400], 200, 100) == [10.0, 20.0, 30.0, 40.0]
    # Outside the image: clamped onto the grid.
    assert pixel_to_grid([-5, -1, 700, 999], 640, 480) == [0, 0, 1000, 1000]


def test_list_structure_is_kept() -> None:
    boxes = [[10, 20, 30, 40], [0, 0, 200, 100]]
    grid = convert_boxes(boxes, 200, 100)
    assert grid == [[50, 200, 150, 400], [0, 0, 1000, 1000]]
    assert convert_boxes(grid, 200, 100, to_grid=False) == [
        [10.0, 20.0, 30.0, 40.0],
        [0.0, 0.0, 200.0, 100.0],
    ]
    assert convert_boxes([], 200, 100) == []
    # A single flat box stays a flat box.
    assert convert_boxes([10, 20, 30, 40], 200, 100) == [50, 200, 150, 400]


def test_dict_structure_is_kept() -> None:
    value = {"1": [[10, 20, 30, 40]], "2": [[0, 0, 100, 50], [100, 50, 200, 100]], "7": [20, 10, 40, 30]}
    grid = convert_boxes(value, 200, 100)
    assert grid == {
        "1": [[50, 200, 150, 400]],
        "2": [[0, 0, 500, 500], [500, 500, 1000, 1000]],
        "7": [100, 100, 200, 300],
    }
    assert list(grid) == ["1", "2", "7"]
    back = convert_boxes(grid, 200, 100, to_grid=False)
    assert back == {
        "1": [[10.0, 20.0, 30.0, 40.0]],
        "2": [[0.0, 0.0, 100.0, 50.0], [100.0, 50.0, 200.0, 100.0]],
        "7": [20.0, 10.0, 40.0, 30.0],
    }


def test_non_box_structures_are_rejected() -> None:
    assert not is_box([1, 2, 3])
    assert not is_box([True, 2, 3, 4])
    assert not is_box(["1", 2, 3, 4])
    assert is_box((1, 2.5, 3, 4))
    with pytest.raises(ValueError, match="not a box structure"):
        convert_boxes("[[1, 2, 3, 4]]", 100, 100)
    with pytest.raises(ValueError, match="not a box structure"):
        convert_boxes([[1, 2, 3]], 100, 100)
