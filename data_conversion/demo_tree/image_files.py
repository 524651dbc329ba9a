"""How a drawn demo image is written to disk: the seven encodings and :func:`save_image`.

The encodings cover the awkward but valid image files a converter meets in the real tree: plain JPEG and PNG,
16-bit grayscale PNG, RGBA PNG with transparent corners, palette PNG, CMYK JPEG and a JPEG stored rotated with
EXIF Orientation 6. A dataset's spec picks the encoding of each record's images
(:attr:`~data_conversion.demo_tree.specs.DemoSpec.encoding`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

JPG, PNG, PNG_I16, PNG_RGBA, PNG_P, JPG_CMYK, JPG_EXIF6 = (
    "jpg",
    "png",
    "png_i16",
    "png_rgba",
    "png_p",
    "jpg_cmyk",
    "jpg_exif6",
)
EXTENSIONS = {JPG: ".jpg", PNG: ".png", PNG_I16: ".png", PNG_RGBA: ".png", PNG_P: ".png"}
EXTENSIONS.update({JPG_CMYK: ".jpg", JPG_EXIF6: ".jpg"})
I16_MAX = 4000  # brightest value of the 16-bit grayscale PNGs


@dataclass
class GenImage:
    """One generated image: its file stem, pixels and on-disk encoding."""

    stem: str
    image: Image.Image
    encoding: str

    @property
    def file_name(self) -> str:
        return self.stem + EXTENSIONS[self.encoding]


def save_image(gen: GenImage, path: Path) -> None:
    """Write a generated image in its encoding (one of the constants above). Raises ``ValueError`` for an
    encoding that is not one of them."""
    img, enc = gen.image, gen.encoding
    if enc == JPG:
        img.save(path, "JPEG", quality=90)
    elif enc == PNG:
        img.save(path, "PNG", compress_level=3)
    elif enc == PNG_I16:
        # Dark values stay as they are (<128), brighter ones map linearly onto 1000..I16_MAX, so both a proper
        # rescale and a naive clip to 8 bits keep the drawn shapes visible.
        a = np.asarray(img.convert("L"), dtype=np.uint32)
        a16 = np.where(a < 128, a, 1000 + (a - 128) * (I16_MAX - 1000) // 127).astype(np.uint16)
        Image.fromarray(a16).save(path, "PNG", compress_level=3)
    elif enc == PNG_RGBA:
        rgba = img.convert("RGBA")
        alpha = Image.new("L", img.size, 0)
        ImageDraw.Draw(alpha).ellipse([2, 2, img.size[0] - 3, img.size[1] - 3], fill=255)
        rgba.putalpha(alpha)
        rgba.save(path, "PNG", compress_level=3)
    elif enc == PNG_P:
        img.convert("RGB").quantize(colors=64).save(path, "PNG", compress_level=3)
    elif enc == JPG_CMYK:
        img.convert("RGB").convert("CMYK").save(path, "JPEG", quality=90)
    elif enc == JPG_EXIF6:
        # Stored rotated 90 degrees counter-clockwise; Orientation 6 tells viewers to rotate it back clockwise.
        exif = Image.Exif()
        exif[0x0112] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=90, exif=exif.tobytes())
    else:
        raise ValueError(f"unknown encoding {enc!r}")
