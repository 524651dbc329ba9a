"""Bounding boxes between FLARE25's original-image pixels and Qwen3-VL's integer 0-1000 grid.

Qwen3-VL reads and writes box coordinates as integers in [0, 1000] relative to the image width and height.
FLARE25 answers are ``[x1, y1, x2, y2]`` pixel boxes of the original image. The grid's step is 1/1000 of the
image side, so a pixel -> grid -> pixel round trip is exact to within ``max(w, h) / 2000 + 0.05`` pixels
(grid rounding plus the 0.1 px rounding of ``grid_to_pixel``): within one pixel for integer coordinates on
images up to 2000 px.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from qwenvl.flare.schema import BOX_QWEN1000

GRID = 1000

Box = list[float]


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


def pixel_to_grid(box: Sequence[float], width: int, height: int) -> list[int]:
    """``[x1, y1, x2, y2]`` in pixels of a ``width`` x ``height`` image -> integers on the 0-1000 grid."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [
        int(round(_clamp(x1 / width * GRID, 0, GRID))),
        int(round(_clamp(y1 / height * GRID, 0, GRID))),
        int(round(_clamp(x2 / width * GRID, 0, GRID))),
        int(round(_clamp(y2 / height * GRID, 0, GRID))),
    ]


def grid_to_pixel(box: Sequence[float], width: int, height: int) -> list[float]:
    """Integers on the 0-1000 grid -> ``[x1, y1, x2, y2]`` pixels of the original image (rounded to 0.1)."""
    x1, y1, x2, y2 = (_clamp(float(v), 0, GRID) for v in box)
    return [
        round(x1 / GRID * width, 1),
        round(y1 / GRID * height, 1),
        round(x2 / GRID * width, 1),
        round(y2 / GRID * height, 1),
    ]


def convert_boxes(value, width: int, height: int, to_grid: bool = True):
    """Convert every box in a detection answer (a list of boxes) or an instance-detection answer (a dict of
    instance id -> list of boxes, or a single box per id) and return the converted copy; structure is kept."""
    fn = pixel_to_grid if to_grid else grid_to_pixel
    if isinstance(value, dict):
        return {k: convert_boxes(v, width, height, to_grid) for k, v in value.items()}
    if is_box(value):
        return fn(value, width, height)
    if isinstance(value, (list, tuple)):
        return [convert_boxes(v, width, height, to_grid) for v in value]
    raise ValueError(f"not a box structure: {value!r}")


def is_box(value) -> bool:
    """True for a flat sequence of four numbers."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def boxes_to_pixels(value: Any, width: int, height: int) -> Any:
    """A parsed detection / instance value on Qwen3-VL's 0-1000 grid -> original-image pixels (structure
    kept; ``None`` stays ``None``). Uses :func:`convert_boxes`."""
    if value is None:
        return None
    return convert_boxes(value, width, height, to_grid=False)


def boxes_to_grid(value: Any, width: int, height: int) -> Any:
    """A parsed detection / instance value in original-image pixels -> the 0-1000 grid (``None`` stays
    ``None``). Uses :func:`convert_boxes`."""
    if value is None:
        return None
    return convert_boxes(value, width, height, to_grid=True)


def record_boxes_to_pixels(value: Any, meta: dict) -> Any:
    """A parsed box value of a converted record -> pixels of its first original image
    (``meta.image_sizes[0]``) when the record was converted with grid boxes (``meta.box_format`` qwen1000);
    unchanged otherwise (pixel boxes, ``None``)."""
    if value is None or meta.get("box_format") != BOX_QWEN1000:
        return value
    sizes = meta.get("image_sizes") or []
    if not sizes:
        raise ValueError(
            f"record {meta.get('image_name')!r} has grid boxes but no meta.image_sizes; re-convert it"
        )
    width, height = sizes[0]
    return boxes_to_pixels(value, int(width), int(height))


def _compact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_compact(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


def format_boxes(value: Any) -> str:
    """Boxes (a list, or an instance dict) as compact JSON, integral coordinates written as integers: the
    challenge's answer form."""
    return json.dumps(_compact(value), separators=(", ", ": "))
