"""Pictures for ``report.html``: thumbnails of the record images with ground-truth and predicted boxes drawn
on them, as ``data:`` URIs so the page needs no other file.

Boxes are in original-image pixels (what the challenge answers and the predictions hold); they are drawn after
the image is fitted into a thumbnail, at their scaled places, so lines stay one thickness whatever the image
size. Ground truth is solid :data:`GT_COLOUR` (green), the prediction dashed :data:`PRED_COLOUR` (magenta) on
top: where both coincide, the gaps of the dashes show the ground truth under them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw

from qwenvl.flare.boxes import is_box

THUMB_SIDE = 320  # longest side of a single gallery image, in pixels
MAX_UPSCALE = 3.0  # small images are enlarged at most this much
JPEG_QUALITY = 80
GT_COLOUR = (0, 200, 83)  # ground-truth boxes: solid green
PRED_COLOUR = (255, 0, 170)  # predicted boxes: dashed magenta
LINE_WIDTH = 2
DASH, GAP = 6, 4


def box_list(value: Any) -> list[list[float]]:
    """Every ``[x1, y1, x2, y2]`` in a parsed box value (a list of boxes, an instance dict, nested)."""
    if value is None:
        return []
    if is_box(value):
        return [[float(v) for v in value]]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return [box for item in items for box in box_list(item)]


def _scaled(box: Sequence[float], scale: tuple[float, float]) -> list[int]:
    x1, y1, x2, y2 = (round(v * scale[i % 2]) for i, v in enumerate(box))
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: list[int], colour: tuple, width: int) -> None:
    """A rectangle outline of ``width`` pixels inside ``box`` (as PIL draws one), in dashes from each corner."""
    x1, y1, x2, y2 = box
    w = width - 1
    for s in range(x1, x2 + 1, DASH + GAP):
        e = min(s + DASH - 1, x2)
        draw.rectangle([s, y1, e, min(y1 + w, y2)], fill=colour)
        draw.rectangle([s, max(y2 - w, y1), e, y2], fill=colour)
    for s in range(y1, y2 + 1, DASH + GAP):
        e = min(s + DASH - 1, y2)
        draw.rectangle([x1, s, min(x1 + w, x2), e], fill=colour)
        draw.rectangle([max(x2 - w, x1), s, x2, e], fill=colour)


def draw_boxes(
    image: Image.Image,
    gt_boxes: Sequence[Sequence[float]],
    pred_boxes: Sequence[Sequence[float]],
    scale: tuple[float, float] = (1.0, 1.0),
    width: int = LINE_WIDTH,
) -> Image.Image:
    """A copy of ``image`` with the ground-truth boxes drawn solid in :data:`GT_COLOUR` and the predicted
    ones dashed in :data:`PRED_COLOUR` on top. Boxes are in the pixels of the image ``scale`` (x, y) shrank
    or enlarged into ``image``."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    for box in gt_boxes:
        draw.rectangle(_scaled(box, scale), outline=GT_COLOUR, width=width)
    for box in pred_boxes:
        _dashed_rectangle(draw, _scaled(box, scale), PRED_COLOUR, width)
    return out


def thumbnail(
    image: Image.Image,
    max_side: int = THUMB_SIDE,
    gt_boxes: Sequence[Sequence[float]] = (),
    pred_boxes: Sequence[Sequence[float]] = (),
) -> Image.Image:
    """``image`` fitted into ``max_side`` (enlarged at most :data:`MAX_UPSCALE` times), then the boxes
    (original-image pixels) drawn at their scaled places, so lines stay crisp."""
    factor = min(max_side / max(image.size), MAX_UPSCALE)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    resample = Image.Resampling.LANCZOS if factor < 1 else Image.Resampling.BICUBIC
    small = image.convert("RGB").resize(size, resample)
    return draw_boxes(small, gt_boxes, pred_boxes, (size[0] / image.width, size[1] / image.height))


def image_uri(image: Image.Image) -> str:
    """A ``data:`` URI of ``image`` as JPEG."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
