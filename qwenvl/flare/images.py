"""Image rules shared by conversion, validation and the training data loader: the one place they live.

* :func:`read_image_size` - the size the model will see (EXIF orientation applied), from the header only.
* :func:`inspect_image` / :func:`check_image` - does the file exist, and does it decode fully?
* :func:`load_rgb` - any FLARE25 image as 8-bit RGB: EXIF orientation applied, 16/32-bit and float grayscale
  rescaled by the image's own min..max, transparency composited on white, CMYK / palette / 1-bit converted.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# EXIF orientations 5-8 rotate by 90 or 270 degrees: the displayed width is the stored height.
_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)

# Grayscale modes with more than 8 bits per pixel (integer or float): rescaled by min..max.
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# Modes carrying an alpha channel: composited on white.
ALPHA_MODES = ("LA", "La", "RGBA", "RGBa", "PA")

MISSING = "missing"
CORRUPT = "corrupt"


@dataclass(frozen=True)
class ImageInfo:
    """Result of :func:`inspect_image`: ``problem`` is ``None`` (decodes fully), ``"missing"`` or ``"corrupt"``.

    ``size`` is the displayed ``(width, height)`` (EXIF orientation applied) when the image decodes.
    """

    path: str
    problem: str | None = None
    detail: str = ""
    size: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _displayed_size(size: tuple[int, int], orientation: object) -> tuple[int, int]:
    width, height = size
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def _png_exif_orientation(path: str | os.PathLike) -> object:
    """Orientation from a PNG's ``eXIf`` chunk wherever it sits (also after the pixel data), found by walking
    the chunk headers and seeking over their data: nothing is decompressed."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            header = f.read(8)
            if len(header) < 8:
                return None
            length, kind = struct.unpack(">I4s", header)
            if kind == b"eXIf":
                exif = Image.Exif()
                exif.load(b"Exif\x00\x00" + f.read(length))
                return exif.get(_ORIENTATION_TAG)
            if kind == b"IEND":
                return None
            f.seek(length + 4, os.SEEK_CUR)  # data + CRC


def _header_orientation(img: Image.Image, path: str | os.PathLike) -> object:
    """EXIF orientation without decoding pixels.

    ``PngImageFile.getexif`` loads the whole image to look for an ``eXIf`` chunk after the pixel data; the base
    implementation reads only what ``Image.open`` already parsed, and a PNG whose ``eXIf`` chunk comes late is
    handled by walking its chunks, so the answer always matches what ``ImageOps.exif_transpose`` will do.
    """
    orientation = Image.Image.getexif(img).get(_ORIENTATION_TAG)
    if orientation is None and img.format == "PNG" and "exif" not in img.info:
        orientation = _png_exif_orientation(path)
    return orientation


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of the image as displayed (EXIF orientations 5-8 swap the sides), read from the
    header without decoding pixels. Raises ``FileNotFoundError`` / ``PIL.UnidentifiedImageError``."""
    with Image.open(path) as img:
        return _displayed_size(img.size, _header_orientation(img, path))


def inspect_image(path: str | os.PathLike) -> ImageInfo:
    """Open ``path`` once, decode every pixel, and report the displayed size or why it is unusable.

    A missing file (``problem="missing"``) is told apart from one that exists but does not decode
    (``problem="corrupt"``: unidentified format, truncated data, not a regular file...).
    """
    p = Path(path)
    if not p.exists():
        return ImageInfo(str(path), MISSING, f"file not found: {path}")
    if not p.is_file():
        return ImageInfo(str(path), CORRUPT, f"not a regular file: {path}")
    try:
        with Image.open(p) as img:
            stored = img.size
            img.load()  # full decode: truncated or garbled pixel data raises here
            orientation = img.getexif().get(_ORIENTATION_TAG)  # after load: every EXIF location is known
    except Exception as e:  # noqa: BLE001 - any decoder failure means "does not decode"
        return ImageInfo(str(path), CORRUPT, f"cannot decode {path}: {type(e).__name__}: {e}")
    return ImageInfo(str(path), None, "", _displayed_size(stored, orientation))


def check_image(path: str | os.PathLike) -> str | None:
    """``None`` when the image exists and decodes fully, else a short reason. Missing files give a reason
    starting with ``"file not found"``; use :func:`inspect_image` to branch on ``problem`` instead."""
    info = inspect_image(path)
    return None if info.ok else info.detail


def _rescale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map the array's own finite min..max range linearly onto 0..255 (rounded half up); a constant image maps
    to 0, NaN and -inf to 0, +inf to 255."""
    arr = values.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.where(arr == np.inf, 255, 0).astype(np.uint8)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if hi == lo:
        scaled = np.zeros_like(arr)
    else:
        scaled = np.floor((np.clip(arr, lo, hi) - lo) * 255.0 / (hi - lo) + 0.5)
    scaled = np.where(np.isnan(arr), 0, scaled)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _composite_on_white(img: Image.Image) -> Image.Image:
    """RGBA (or anything convertible to it) over an opaque white background, rounded half up."""
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:4] / 255.0
    out = np.floor(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an already opened (and orientation-corrected) image to 8-bit RGB by the rules above."""
    mode = img.mode
    if mode in HIGH_DEPTH_MODES:
        gray = _rescale_to_uint8(np.asarray(img))
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ALPHA_MODES or "transparency" in img.info:
        return _composite_on_white(img)
    if mode == "RGB":
        return img.copy()
    try:
        return img.convert("RGB")  # "L", "1", "P", "CMYK", "YCbCr", ...
    except (ValueError, OSError) as e:
        raise ValueError(f"cannot convert image mode {mode!r} to RGB: {e}") from e


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Load ``path`` as an 8-bit RGB ``PIL.Image.Image`` with its EXIF orientation applied.

    16-bit / 32-bit integer and float grayscale are rescaled by the image's own min..max (a constant image is
    black); alpha and palette transparency are composited on white; CMYK, palette, ``L`` and ``1`` are
    converted. Raises ``FileNotFoundError`` or a PIL error for unusable files.
    """
    with Image.open(path) as img:
        img.load()
        upright = ImageOps.exif_transpose(img)
        return to_rgb(upright)


def fit_to_budget(img: Image.Image, min_pixels: int, max_pixels: int, factor: int) -> Image.Image:
    """``img`` resized (bicubic) to the size the image processor gives it within ``[min_pixels,
    max_pixels]`` on its ``factor`` grid (:func:`qwenvl.flare.pixels.smart_resize`): for a caller that cannot
    pass the processor a budget per image (TRL's GRPO batches), so the processor, whose limits then admit
    the fitted size, leaves it as it is and each image still gets its own number of visual tokens."""
    from qwenvl.flare.pixels import smart_resize

    height, width = smart_resize(img.height, img.width, min_pixels, max_pixels, factor)
    if (width, height) == img.size:
        return img
    return img.resize((width, height), Image.Resampling.BICUBIC)
