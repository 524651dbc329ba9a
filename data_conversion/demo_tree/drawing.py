"""Image primitives of the demo tree: noisy backgrounds, per-class shapes and colours, non-overlapping boxes.

Every primitive draws with the caller's ``numpy`` generator, in a fixed order of draws, so one seed always
gives the same pixels. Boxes are integer pixel extents ``[x1, y1, x2, y2]``, inclusive (the first and last
object pixel), which is how detection answers state them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from data_conversion.demo_tree.specs import RGB, DemoSpec

Box = list[int]

# Per-class cues: class k of a dataset is drawn as SHAPES[k] in PALETTE[k] (or GRAY_LEVELS[k] in grayscale).
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "hbar")
PALETTE: tuple[RGB, ...] = (
    (230, 40, 40),
    (40, 200, 60),
    (50, 90, 235),
    (240, 220, 40),
    (200, 60, 220),
    (40, 220, 220),
    (250, 140, 20),
)
GRAY_LEVELS = (255, 205, 235, 180, 245, 195, 225)


def _size(spec: DemoSpec, rng: np.random.Generator) -> tuple[int, int]:
    """A random (width, height) in the spec's ranges, never square."""
    w = int(rng.integers(spec.width[0], spec.width[1] + 1))
    h = int(rng.integers(spec.height[0], spec.height[1] + 1))
    return w, (h + 1 if h == w else h)


def _background(
    spec: DemoSpec, rng: np.random.Generator, w: int, h: int, base: RGB | None = None
) -> Image.Image:
    """The spec's background colour plus uniform gray noise in 2x2 blocks (speckle-like, cheap to draw and
    to compress)."""
    coarse = rng.integers(0, spec.noise + 1, size=((h + 1) // 2, (w + 1) // 2), dtype=np.int16)
    noise = coarse.repeat(2, axis=0).repeat(2, axis=1)[:h, :w]
    colour = np.array(base or spec.background, dtype=np.int16)
    if spec.gray:
        arr = noise + int(colour[0])
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    arr = noise[..., None] + colour
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")


def new_image(spec: DemoSpec, rng: np.random.Generator, base: RGB | None = None) -> Image.Image:
    """A fresh noisy background of a random size in the spec's ranges (``base`` overrides its colour)."""
    w, h = _size(spec, rng)
    return _background(spec, rng, w, h, base)


def class_fill(spec: DemoSpec, k: int) -> int | RGB:
    """Colour of class / label k in the spec's image mode."""
    return GRAY_LEVELS[k % len(GRAY_LEVELS)] if spec.gray else PALETTE[k % len(PALETTE)]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    """A filled shape (one of SHAPES) of radius ``r`` centred on (cx, cy). Raises ``ValueError`` for a shape
    not in SHAPES."""
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle([cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif shape == "cross":
        t = r / 3
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(r / 3)))
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "hbar":
        draw.rectangle([cx - r, cy - r / 3, cx + r, cy + r / 3], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_class_cue(spec: DemoSpec, rng: np.random.Generator, img: Image.Image, k: int) -> None:
    """Draw class k's shape in its colour at a random place, 30-45% of the short side in radius: large
    enough to colour several of the 32-pixel patches the demo's 16-token pixel budget leaves, so a tiny model
    learns the classes within the demo's few hundred training steps."""
    w, h = img.size
    r = float(rng.uniform(0.30, 0.45)) * min(w, h)
    cx = float(rng.uniform(r + 2, w - r - 2))
    cy = float(rng.uniform(r + 2, h - r - 2))
    draw_shape(ImageDraw.Draw(img), SHAPES[k % len(SHAPES)], cx, cy, r, class_fill(spec, k))


# Fine textures, one per class: a 2-pixel period that survives the native view of an image and is averaged
# away when the image is shrunk to a few visual tokens (every pattern covers half of its pixels, so the mean
# colour says nothing about the class).
TEXTURES = ("hlines", "vlines", "checker")


def texture_mask(name: str, w: int, h: int) -> np.ndarray:
    """``(h, w)`` booleans: the "on" pixels of texture ``name`` (one of TEXTURES)."""
    yy, xx = np.mgrid[0:h, 0:w]
    phase = {"hlines": yy, "vlines": xx, "checker": xx + yy}.get(name)
    if phase is None:
        raise ValueError(f"unknown texture {name!r}; one of {TEXTURES}")
    return phase % 2 == 0


def draw_texture_cue(
    img: Image.Image, rng: np.random.Generator, k: int, dark: RGB, light: RGB
) -> Image.Image:
    """A lesion disk 30-42 % of the short side in radius at a random place, filled with texture k of
    ``dark`` and ``light`` pixels: the class is visible only where the image keeps its fine detail (a
    resolution test: the same size, place and mean colour for every class). Returns a new image."""
    w, h = img.size
    r = float(rng.uniform(0.30, 0.42)) * min(w, h)
    cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
    yy, xx = np.mgrid[0:h, 0:w]
    disk = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    on = texture_mask(TEXTURES[k % len(TEXTURES)], w, h)
    lesion = np.where(on[..., None], np.array(dark, np.int16), np.array(light, np.int16))
    arr = np.where(disk[..., None], lesion, np.asarray(img.convert("RGB"), dtype=np.int16))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")


def place_box(
    rng: np.random.Generator,
    w: int,
    h: int,
    size: Callable[[], tuple[int, int]],
    taken: list[Box],
    gap: int = 4,
    tries: int = 60,
) -> Box | None:
    """A random integer box (inclusive pixel extents) of ``size()`` pixels inside the image, at least ``gap``
    pixels apart from every box in ``taken``, or None when ``tries`` attempts all collide."""
    for _ in range(tries):
        bw, bh = size()
        x1 = int(rng.integers(2, max(3, w - bw - 2)))
        y1 = int(rng.integers(2, max(3, h - bh - 2)))
        box = [x1, y1, min(x1 + bw, w - 3), min(y1 + bh, h - 3)]
        if all(_apart(box, o, gap) for o in taken):
            return box
    return None


def place_boxes(rng: np.random.Generator, w: int, h: int, n: int, lo: float, hi: float) -> list[Box]:
    """1 to ``n`` non-overlapping boxes whose sides are ``lo``..``hi`` of the image's short side. Raises
    ``RuntimeError`` when not even one fits (the spec's image sizes are too small for ``lo``)."""

    def size() -> tuple[int, int]:
        return int(rng.uniform(lo, hi) * min(w, h)), int(rng.uniform(lo, hi) * min(w, h))

    boxes: list[Box] = []
    for _ in range(n):
        box = place_box(rng, w, h, size, boxes)
        if box is None:
            break
        boxes.append(box)
    if not boxes:
        raise RuntimeError(f"could not place a box in a {w}x{h} image")
    return boxes


def _apart(a: Box, b: Box, gap: int) -> bool:
    return a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1]


def _bright_fill(spec: DemoSpec, rng: np.random.Generator) -> int | RGB:
    level = int(rng.integers(215, 256))
    return level if spec.gray else (level, level, level)


def draw_objects(
    spec: DemoSpec, rng: np.random.Generator, img: Image.Image, boxes: list[Box], shape: str
) -> None:
    """Fill each box exactly (inclusive extents) with a bright ellipse or rectangle."""
    draw = ImageDraw.Draw(img)
    for box in boxes:
        fill = _bright_fill(spec, rng)
        if shape == "ellipse":
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)


def draw_caliper(draw: ImageDraw.ImageDraw, x: int, y: int) -> None:
    """A mid-gray ultrasound caliper mark: an 11-pixel cross centred on (x, y)."""
    draw.line([x - 5, y, x + 5, y], fill=140, width=1)
    draw.line([x, y - 5, x, y + 5], fill=140, width=1)
