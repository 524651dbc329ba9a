"""Generate a miniature FLARE25 2D tree with synthetic images, faithful to the real layout.

The tree follows ``FLARE25_FORMAT.md``: ``<root>/<split folder>/<Modality>/<dataset>/`` for all 19 datasets and
the four split folders, images under ``imagesTr`` / ``imagesVal`` / ``imagesTs``, and one question file per
folder holding exactly ``samples_per_split`` records. Every quirk a converter must cope with is present: mixed
``TaskType`` casing, free-text ``Modality``, three option styles, every answer encoding (letters, label names
joined by ``;`` or ``,``, pixel boxes, instance-id box objects, numbers written as JSON numbers or strings,
reports), multi-image records, images shared between records (iugc), awkward but valid image files (16-bit
grayscale, RGBA, palette, CMYK and EXIF-rotated JPEG), the ``IU_XRay_all_train.json`` file name variant and
the organisers' ``chestdr_questions_val_withGT.json``.

The images carry learnable signal: each class has its own drawn shape and colour, boxes tightly surround
bright objects (``[x1, y1, x2, y2]`` are the first and last object pixel, inclusive), counts equal the number of
drawn dots, regression values are a bar length or a caliper distance, and reports describe visible cues.

``--with-defects`` adds the six defects listed in :func:`demo_defects` (and nothing else), so converter tests can
check that exactly these are skipped and reported.

Usage::

    uv run python data_conversion/make_demo_dataset.py --output_dir demo_flare25 [--seed 0]
        [--samples_per_split 4] [--with-defects]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from qwenvl.flare.datasets import (
    FLARE_DATASETS,
    IMAGE_FOLDERS,
    QUESTION_FILE_SUFFIX,
    SPLIT_FOLDERS,
)
from qwenvl.flare.schema import (
    SKIP_CORRUPT_IMAGE,
    SKIP_DUPLICATE,
    SKIP_EMPTY_ANSWER,
    SKIP_MISSING_IMAGE,
    SKIP_UNREADABLE_FILE,
)

DEFAULT_SEED = 0
DEFAULT_SAMPLES_PER_SPLIT = 4
MARKER_FILE = ".flare25_demo"  # JSON summary at the root (no .json suffix, so no *.json glob sees it)
UNLABELLED_FOLDERS = ("validation-hidden", "testing")  # Answer is "" in their question files
WITH_GT_DATASET = "chestdr"  # the one dataset whose validation-hidden folder holds a _withGT copy
REPORT_VARIANT_DATASET = "IU_XRay"  # its training file is named <dataset>_all_train.json
I16_MAX = 4000  # brightest value of the 16-bit grayscale PNGs
IUGC_MM_PER_PIXEL = 0.2  # pixel spacing stated in the iugc regression question

RGB = tuple[int, int, int]
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
# Chromosome instance ids and their colours (each id its own colour).
INSTANCE_COLOURS: dict[str, RGB] = {
    "1": (255, 60, 60),
    "2": (60, 255, 60),
    "3": (70, 110, 255),
    "4": (255, 255, 60),
    "5": (255, 60, 255),
    "6": (60, 255, 255),
}
COUNT_CELL = 16  # neurips22cell dots sit one per 16x16 cell, so a cell with bright pixels is one dot

# Image encodings: how a drawn image is written to disk.
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


# --------------------------------------------------------------------------------------------------------------
# Dataset table
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoSpec:
    """How the demo draws and asks about one dataset."""

    name: str
    builder: str  # key of BUILDERS
    task_type: str  # raw TaskType spelling written to the files
    modality_text: str  # free-text Modality field
    stem: str  # question text before the options
    labels: tuple[str, ...] = ()  # class / label names in their fixed option order
    option_style: str = "colon"  # colon "A: x B: y" | dot "A. x, B. y" | paren "A) x B) y"
    gray: bool = False  # drawn in mode "L" instead of "RGB"
    width: tuple[int, int] = (256, 320)  # inclusive range of image widths
    height: tuple[int, int] = (192, 256)
    background: RGB = (40, 40, 40)  # base colour under the noise
    noise: int = 50  # noise amplitude added to the background
    views: str = "one"  # one | three | alternate (2 images on odd record indices)
    encoding: Callable[[int], str] = field(default=lambda idx: JPG)  # record index -> encoding
    extra: dict = field(default_factory=dict)  # builder-specific settings


def _every(n: int, special: str, other: str) -> Callable[[int], str]:
    return lambda idx: special if idx % n == 0 else other


DEMO_SPECS: dict[str, DemoSpec] = {
    s.name: s
    for s in (
        DemoSpec(
            "retino",
            "classification",
            "classification",
            "fundus photography",
            "What is the diabetic retinopathy grade of this fundus image?",
            ("No diabetic retinopathy", "Mild NPDR", "Moderate NPDR", "Severe NPDR", "Proliferative DR"),
            "colon",
            width=(288, 384),
            height=(224, 288),
            background=(70, 25, 10),
        ),
        DemoSpec(
            "fundus",
            "classification",
            "Classification",
            "Fundus",
            "Which condition does this fundus photograph show?",
            ("Normal", "Glaucoma", "Cataract", "Diabetic retinopathy"),
            "dot",
            width=(256, 352),
            height=(200, 280),
            background=(80, 30, 15),
            encoding=_every(3, JPG_EXIF6, JPG),
        ),
        DemoSpec(
            "BUSI-det",
            "detection",
            "Detection",
            "Ultrasound",
            "Detect all breast lesions in this ultrasound image. "
            "Answer with bounding boxes [[x1, y1, x2, y2], ...] in pixel coordinates.",
            gray=True,
            width=(200, 320),
            height=(160, 256),
            background=(25, 25, 25),
            noise=70,
            encoding=lambda idx: PNG,
        ),
        DemoSpec(
            "BUS-UCLM-det",
            "detection",
            "detection",
            "ultrasound",
            "Locate every lesion in this breast ultrasound and give their bounding boxes in pixels.",
            gray=True,
            width=(240, 360),
            height=(180, 260),
            background=(20, 20, 20),
            noise=60,
        ),
        DemoSpec(
            "BUSI",
            "classification",
            "Classification",
            "Ultrasound",
            "What is the finding in this breast ultrasound image?",
            ("Normal", "Benign", "Malignant"),
            "paren",
            gray=True,
            width=(160, 256),
            height=(128, 200),
            noise=70,
            encoding=lambda idx: PNG,
        ),
        DemoSpec(
            "BUS-UCLM",
            "classification",
            "classification",
            "Breast Ultrasound",
            "Classify the breast lesion in this image.",
            ("Normal", "Benign lesion", "Malignant lesion"),
            "colon",
            gray=True,
            width=(200, 300),
            height=(150, 230),
            noise=60,
            encoding=_every(3, PNG_P, PNG),
        ),
        DemoSpec(
            "iugc",
            "iugc",
            "",  # three task types, set per record
            "Ultrasound",
            "Is this a standard intrapartum ultrasound plane?",
            ("No", "Yes"),
            "dot",
            gray=True,
            width=(320, 400),
            height=(240, 300),
            background=(20, 20, 20),
            noise=60,
            encoding=lambda idx: PNG,
        ),
        DemoSpec(
            "boneresorption",
            "bar_regression",
            "Regression",
            "X-ray",
            "What percentage of bone resorption is visible in this radiograph? Answer with a number.",
            gray=True,
            width=(256, 384),
            height=(160, 240),
            background=(35, 35, 35),
            noise=40,
        ),
        DemoSpec(
            "dental",
            "classification",
            "classification",
            "Panoramic X-ray",
            "Which dental condition is visible in this radiograph?",
            ("Healthy", "Caries", "Periapical lesion", "Impacted tooth"),
            "paren",
            gray=True,
            width=(320, 448),
            height=(160, 224),
            background=(0, 0, 0),
            noise=60,
            encoding=lambda idx: PNG_I16,
        ),
        DemoSpec(
            "periapical",
            "multilabel",
            "Multi-label Classification",
            "X-ray",
            "Which findings are present in this periapical radiograph?",
            ("caries", "periapical lesion", "restoration", "root canal treatment", "crown"),
            gray=True,
            width=(160, 224),
            height=(200, 288),
            background=(30, 30, 30),
            noise=40,
            encoding=lambda idx: PNG,
            extra={"separator": ";"},
        ),
        DemoSpec(
            "IU_XRay",
            "report",
            "Report_Generation",
            "X-ray",
            "Write the findings and impression of the radiology report for this chest X-ray study.",
            gray=True,
            width=(224, 320),
            height=(240, 320),
            background=(45, 45, 45),
            noise=30,
            views="alternate",
            encoding=lambda idx: PNG,
            extra={
                "two_view_stem": "Write the findings and impression of the radiology report for this chest "
                "X-ray study (frontal and lateral views)."
            },
        ),
        DemoSpec(
            "chestdr",
            "chestdr",
            "",  # classification and multi-label records alternate
            "Chest X-ray",
            "Does this chest radiograph show tuberculosis?",
            ("No", "Yes"),
            "dot",
            gray=True,
            width=(480, 640),
            height=(400, 560),
            background=(35, 35, 35),
            noise=40,
            extra={
                "separator": ", ",
                "ml_labels": ("pleural effusion", "cardiomegaly", "nodule", "pneumothorax", "atelectasis"),
                "ml_stem": "Which abnormalities are present in this chest radiograph?",
            },
        ),
        DemoSpec(
            "neojaundice",
            "tint_classification",
            "classification",
            "Digital Camera",
            "Based on these three skin images, does this newborn need treatment for jaundice?",
            ("No treatment needed", "Treatment needed"),
            "colon",
            width=(96, 160),
            height=(120, 192),
            noise=30,
            views="three",
            extra={"tints": ((225, 165, 150), (225, 200, 90))},
        ),
        DemoSpec(
            "chromosome",
            "instance",
            "Instance_Detection",
            "microscopy",
            "Detect every chromosome in this karyotype image and group the boxes by chromosome number. "
            'Answer as a JSON object {"id": [[x1, y1, x2, y2], ...]} in pixel coordinates.',
            width=(320, 448),
            height=(256, 352),
            background=(10, 10, 10),
            noise=40,
            encoding=lambda idx: PNG,
        ),
        DemoSpec(
            "neurips22cell",
            "counting",
            "Counting",
            "microscopy",
            "How many cells are in this microscopy image? Answer with an integer.",
            width=(256, 384),
            height=(192, 288),
            background=(20, 5, 25),
            noise=40,
            encoding=lambda idx: PNG,
        ),
        DemoSpec(
            "bone_marrow",
            "classification",
            "Classification",
            "microscopy",
            "What is the diagnosis for this bone marrow smear?",
            ("Normal", "Myelofibrosis", "Acute myeloid leukemia", "Multiple myeloma"),
            "colon",
            width=(192, 256),
            height=(160, 224),
            background=(200, 170, 200),
        ),
        DemoSpec(
            "endo",
            "classification",
            "classification",
            "Endoscopy",
            "Which finding is shown in this endoscopy image?",
            ("Normal mucosa", "Polyp", "Ulcer", "Bleeding"),
            "dot",
            width=(256, 352),
            height=(200, 280),
            background=(170, 100, 90),
            noise=40,
            views="alternate",
            encoding=_every(3, PNG_RGBA, JPG),
        ),
        DemoSpec(
            "bcn20000",
            "classification",
            "Classification",
            "Dermoscopy",
            "What is the most likely diagnosis of this skin lesion?",
            (
                "Nevus",
                "Melanoma",
                "Basal cell carcinoma",
                "Actinic keratosis",
                "Benign keratosis",
                "Dermatofibroma",
            ),
            "paren",
            width=(224, 320),
            height=(192, 256),
            background=(200, 150, 130),
            noise=40,
            encoding=_every(3, JPG_CMYK, JPG),
        ),
        DemoSpec(
            "CMMD",
            "classification",
            "classification",
            "Mammography",
            "Is the lesion in this mammogram benign or malignant?",
            ("Benign", "Malignant"),
            "dot",
            gray=True,
            width=(160, 224),
            height=(256, 352),
            background=(15, 15, 15),
            noise=40,
            views="alternate",
        ),
    )
}
assert list(DEMO_SPECS) == list(FLARE_DATASETS), "DEMO_SPECS must cover the 19 datasets in table order"


# --------------------------------------------------------------------------------------------------------------
# Defects
# --------------------------------------------------------------------------------------------------------------


def demo_defects(samples_per_split: int = DEFAULT_SAMPLES_PER_SPLIT) -> list[dict]:
    """The defects ``--with-defects`` seeds, as the converter should report them. Record defects give the
    record's index in its question file; the unreadable file gives its file name (in its dataset folder)."""
    return [
        {"dataset": "retino", "split_folder": "training", "index": 0, "reason": SKIP_MISSING_IMAGE},
        {"dataset": "bone_marrow", "split_folder": "training", "index": 1, "reason": SKIP_CORRUPT_IMAGE},
        {"dataset": "neojaundice", "split_folder": "training", "index": 0, "reason": SKIP_MISSING_IMAGE},
        {"dataset": "boneresorption", "split_folder": "training", "index": 0, "reason": SKIP_EMPTY_ANSWER},
        {
            "dataset": "BUSI-det",
            "split_folder": "training",
            "index": samples_per_split,
            "reason": SKIP_DUPLICATE,
        },
        {
            "dataset": "endo",
            "split_folder": "training",
            "file": "endo_questions_train.json",
            "reason": SKIP_UNREADABLE_FILE,
        },
    ]


DEMO_DEFECTS: list[dict] = demo_defects(DEFAULT_SAMPLES_PER_SPLIT)  # for the default samples_per_split


# --------------------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------------------


@dataclass
class GenImage:
    """One generated image: its file stem, pixels and on-disk encoding."""

    stem: str
    image: Image.Image
    encoding: str

    @property
    def file_name(self) -> str:
        return self.stem + EXTENSIONS[self.encoding]


@dataclass
class Sample:
    """One question record before it is written (``answer`` is the ground truth, a str or number)."""

    task_type: str
    question: str
    answer: str | int | float
    images: list[GenImage]


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


def _fill(spec: DemoSpec, k: int) -> int | RGB:
    """Colour of class / label k in the spec's image mode."""
    return GRAY_LEVELS[k % len(GRAY_LEVELS)] if spec.gray else PALETTE[k % len(PALETTE)]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    """A filled shape of radius ``r`` centred on (cx, cy)."""
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


def _draw_class_cue(spec: DemoSpec, rng: np.random.Generator, img: Image.Image, k: int) -> None:
    """Draw class k's shape in its colour at a random place, 15-25% of the short side in radius."""
    w, h = img.size
    r = float(rng.uniform(0.15, 0.25)) * min(w, h)
    cx = float(rng.uniform(r + 2, w - r - 2))
    cy = float(rng.uniform(r + 2, h - r - 2))
    _draw_shape(ImageDraw.Draw(img), SHAPES[k % len(SHAPES)], cx, cy, r, _fill(spec, k))


def _place_box(
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


def _place_boxes(rng: np.random.Generator, w: int, h: int, n: int, lo: float, hi: float) -> list[Box]:
    """1 to ``n`` non-overlapping boxes whose sides are ``lo``..``hi`` of the image's short side."""

    def size() -> tuple[int, int]:
        return int(rng.uniform(lo, hi) * min(w, h)), int(rng.uniform(lo, hi) * min(w, h))

    boxes: list[Box] = []
    for _ in range(n):
        box = _place_box(rng, w, h, size, boxes)
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


# --------------------------------------------------------------------------------------------------------------
# Question text
# --------------------------------------------------------------------------------------------------------------

LETTERS = "ABCDEFGHIJ"


def format_options(stem: str, labels: tuple[str, ...], style: str) -> str:
    """The question with inline options in one of the three FLARE25 styles."""
    if style == "colon":
        return f"Question: {stem} Options: " + " ".join(
            f"{LETTERS[i]}: {lab}" for i, lab in enumerate(labels)
        )
    if style == "dot":
        return f"{stem} " + ", ".join(f"{LETTERS[i]}. {lab}" for i, lab in enumerate(labels))
    if style == "paren":
        return f"{stem} " + " ".join(f"{LETTERS[i]}) {lab}" for i, lab in enumerate(labels))
    raise ValueError(f"unknown option style {style!r}")


def _multilabel_question(stem: str, labels: tuple[str, ...], separator: str) -> str:
    sep_name = "semicolons" if separator.strip() == ";" else "commas"
    return f"{stem} Options: {', '.join(labels)}. List every finding present, separated by {sep_name}."


# --------------------------------------------------------------------------------------------------------------
# Builders: spec, rng, number of records -> samples of one question file
# --------------------------------------------------------------------------------------------------------------


def _balanced(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """``n`` class indices spread evenly over ``k`` classes, in random order."""
    return [int(v) for v in rng.permutation(np.arange(n) % k)]


def _n_views(spec: DemoSpec, idx: int) -> int:
    return {"one": 1, "three": 3}.get(spec.views, 2 if idx % 2 == 1 else 1)


def _view_stems(spec: DemoSpec, idx: int) -> list[str]:
    """File stems of record ``idx``'s images: ``retino_0003``, or ``endo_0003_1``, ``endo_0003_2``."""
    n = _n_views(spec, idx)
    base = f"{spec.name}_{idx:04d}"
    return [base] if n == 1 else [f"{base}_{v + 1}" for v in range(n)]


def _single(spec: DemoSpec, idx: int, img: Image.Image) -> list[GenImage]:
    """The image list of a one-image record (``idx`` names the file and picks its encoding)."""
    return [GenImage(f"{spec.name}_{idx:04d}", img, spec.encoding(idx))]


def _new_image(spec: DemoSpec, rng: np.random.Generator, base: RGB | None = None) -> Image.Image:
    w, h = _size(spec, rng)
    return _background(spec, rng, w, h, base)


def _build_classification(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """Class k: shape k in colour k, drawn on every view of the record; answer = option letter k."""
    samples = []
    question = format_options(spec.stem, spec.labels, spec.option_style)
    for idx, k in enumerate(_balanced(rng, n, len(spec.labels))):
        images = []
        for stem in _view_stems(spec, idx):
            img = _new_image(spec, rng)
            _draw_class_cue(spec, rng, img, k)
            images.append(GenImage(stem, img, spec.encoding(idx)))
        samples.append(Sample(spec.task_type, question, LETTERS[k], images))
    return samples


def _build_tint_classification(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """Class k: every view's background has tint k (neojaundice: pink vs yellow skin)."""
    samples = []
    question = format_options(spec.stem, spec.labels, spec.option_style)
    for idx, k in enumerate(_balanced(rng, n, len(spec.labels))):
        images = [
            GenImage(stem, _new_image(spec, rng, spec.extra["tints"][k]), spec.encoding(idx))
            for stem in _view_stems(spec, idx)
        ]
        samples.append(Sample(spec.task_type, question, LETTERS[k], images))
    return samples


def _multilabel_sample(
    spec: DemoSpec, rng: np.random.Generator, idx: int, labels: tuple[str, ...], task_type: str, stem: str
) -> Sample:
    """Each label j present (p=0.4, at least one) is drawn as shape j in slot j of a row across the image."""
    present = rng.random(len(labels)) < 0.4
    if not present.any():
        present[int(rng.integers(len(labels)))] = True
    img = _new_image(spec, rng)
    w, h = img.size
    draw = ImageDraw.Draw(img)
    slot = w / len(labels)
    r = min(slot * 0.35, h * 0.15)
    for j in np.flatnonzero(present):
        cx = slot * (j + 0.5) + float(rng.uniform(-0.1, 0.1)) * slot
        cy = float(rng.uniform(r + 2, h - r - 2))
        _draw_shape(draw, SHAPES[j % len(SHAPES)], cx, cy, r, _fill(spec, int(j)))
    answer = spec.extra["separator"].join(labels[j] for j in np.flatnonzero(present))
    question = _multilabel_question(stem, labels, spec.extra["separator"])
    return Sample(task_type, question, answer, _single(spec, idx, img))


def _build_multilabel(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    return [_multilabel_sample(spec, rng, idx, spec.labels, spec.task_type, spec.stem) for idx in range(n)]


def _build_chestdr(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """Even records: classification (shape cue); odd records: multi-label with labels joined by ", "."""
    classes = iter(_balanced(rng, (n + 1) // 2, len(spec.labels)))
    question = format_options(spec.stem, spec.labels, spec.option_style)
    samples = []
    for idx in range(n):
        if idx % 2 == 0:
            k = next(classes)
            img = _new_image(spec, rng)
            _draw_class_cue(spec, rng, img, k)
            samples.append(Sample("Classification", question, LETTERS[k], _single(spec, idx, img)))
        else:
            ml = spec.extra["ml_labels"]
            samples.append(
                _multilabel_sample(spec, rng, idx, ml, "Multi-label Classification", spec.extra["ml_stem"])
            )
    return samples


def _draw_objects(
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


def _build_detection(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """1-3 bright ellipses on a dark noisy background; the answer is their boxes as a JSON string."""
    samples = []
    for idx in range(n):
        img = _new_image(spec, rng)
        boxes = _place_boxes(rng, *img.size, int(rng.integers(1, 4)), 0.12, 0.35)
        _draw_objects(spec, rng, img, boxes, "ellipse")
        samples.append(Sample(spec.task_type, spec.stem, json.dumps(boxes), _single(spec, idx, img)))
    return samples


def _build_instance(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """2-4 chromosome ids, each with 1-2 elongated objects (mostly upright) in the id's colour; the answer is
    ``{"id": [boxes]}`` as a JSON string, ids in numeric order."""

    def chromosome_size() -> tuple[int, int]:
        long_side, short_side = int(rng.integers(30, 61)), int(rng.integers(8, 15))
        return (short_side, long_side) if rng.random() < 0.7 else (long_side, short_side)

    samples = []
    ids = list(INSTANCE_COLOURS)
    for idx in range(n):
        img = _new_image(spec, rng)
        draw = ImageDraw.Draw(img)
        answer: dict[str, list[Box]] = {}
        taken: list[Box] = []
        for i in sorted(rng.choice(len(ids), size=int(rng.integers(2, 5)), replace=False)):
            for _ in range(int(rng.integers(1, 3))):
                box = _place_box(rng, *img.size, chromosome_size, taken)
                if box is not None:
                    draw.rounded_rectangle(box, radius=3, fill=INSTANCE_COLOURS[ids[i]])
                    answer.setdefault(ids[i], []).append(box)
                    taken.append(box)
        samples.append(Sample(spec.task_type, spec.stem, json.dumps(answer), _single(spec, idx, img)))
    return samples


def _build_counting(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """Bright dots, at most one per 16x16 cell (centred, small jitter); the answer is the number of dots,
    a JSON number on even records and a string on odd ones."""
    samples = []
    for idx in range(n):
        img = _new_image(spec, rng)
        w, h = img.size
        cols, rows = w // COUNT_CELL, h // COUNT_CELL
        count = int(rng.integers(5, int(0.6 * cols * rows) + 1))
        draw = ImageDraw.Draw(img)
        for cell in rng.choice(cols * rows, size=count, replace=False):
            r = float(rng.uniform(3, 4.5))
            cx = (cell % cols + 0.5) * COUNT_CELL + float(rng.uniform(-2, 2))
            cy = (cell // cols + 0.5) * COUNT_CELL + float(rng.uniform(-2, 2))
            level = int(rng.integers(180, 256))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(level // 2, level, level // 2))
        answer: int | str = count if idx % 2 == 0 else str(count)
        samples.append(Sample(spec.task_type, spec.stem, answer, _single(spec, idx, img)))
    return samples


def bar_geometry(width: int) -> tuple[int, int]:
    """(left x, full length) of the boneresorption bar track in an image of this width."""
    margin = max(8, width // 10)
    return margin, width - 2 * margin


def _build_bar_regression(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """A mid-gray track across the image and a bright bar covering ``pct`` percent of it; the answer is pct
    (one decimal), a JSON number on even records and a string on odd ones."""
    samples = []
    for idx in range(n):
        img = _new_image(spec, rng)
        w, h = img.size
        pct = round(float(rng.uniform(5, 95)), 1)
        x0, length = bar_geometry(w)
        y0 = int(rng.integers(h // 4, 3 * h // 4 - 12))
        draw = ImageDraw.Draw(img)
        draw.rectangle([x0, y0, x0 + length - 1, y0 + 11], fill=110)
        draw.rectangle([x0, y0 + 2, x0 + round(pct / 100 * length) - 1, y0 + 9], fill=250)
        answer: float | str = pct if idx % 2 == 0 else f"{pct:.1f}"
        samples.append(Sample(spec.task_type, spec.stem, answer, _single(spec, idx, img)))
    return samples


def _draw_caliper(draw: ImageDraw.ImageDraw, x: int, y: int) -> None:
    draw.line([x - 5, y, x + 5, y], fill=140, width=1)
    draw.line([x, y - 5, x, y + 5], fill=140, width=1)


def _build_iugc(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """Records cycle classification / detection / regression about one shared image per group of three.
    Standard planes ("Yes") show bright ellipses, others bright rectangles; the regression value is the
    distance between two mid-gray calipers in millimetres at IUGC_MM_PER_PIXEL."""
    groups = (n + 2) // 3
    classes = _balanced(rng, groups, len(spec.labels))
    cls_question = format_options(spec.stem, spec.labels, spec.option_style)
    det_question = "Detect the pubic symphysis and the fetal head. Answer with bounding boxes [[x1, y1, x2, y2], ...] in pixels."
    reg_question = (
        "What is the distance between the two calipers in millimetres? "
        f"The pixel spacing is {IUGC_MM_PER_PIXEL} mm. Answer with a number."
    )
    samples: list[Sample] = []
    for g in range(groups):
        img = _new_image(spec, rng)
        w, h = img.size
        boxes = _place_boxes(rng, w, h, int(rng.integers(1, 3)), 0.15, 0.35)
        _draw_objects(spec, rng, img, boxes, "ellipse" if classes[g] == 1 else "rectangle")
        marks: list[Box] = []
        for _ in range(2):
            mark = _place_box(rng, w, h, lambda: (10, 10), boxes + marks, gap=6, tries=500)
            if mark is None:
                raise RuntimeError(f"no room for a caliper in a {w}x{h} iugc image")
            marks.append(mark)
        centres = [(m[0] + 5, m[1] + 5) for m in marks]
        draw = ImageDraw.Draw(img)
        for x, y in centres:
            _draw_caliper(draw, x, y)
        distance = round(math.dist(centres[0], centres[1]) * IUGC_MM_PER_PIXEL, 1)
        image = _single(spec, g, img)  # one file, shared by the group's three records
        samples += [
            Sample("Classification", cls_question, LETTERS[classes[g]], image),
            Sample("Detection", det_question, json.dumps(boxes), image),
            Sample("regression", reg_question, distance if g % 2 == 0 else f"{distance:.1f}", image),
        ]
    return samples[:n]


# (finding, sentence when absent, sentence when present, impression phrase when present)
REPORT_FINDINGS = (
    ("cardiomegaly", "The heart size is normal.", "The heart is enlarged.", "cardiomegaly"),
    (
        "effusion",
        "There is no pleural effusion.",
        "There is a left pleural effusion.",
        "left pleural effusion",
    ),
    (
        "nodule",
        "No focal nodule is seen.",
        "There is a nodule in the right upper lung.",
        "right upper lung nodule",
    ),
)


def report_text(findings: dict[str, bool]) -> str:
    """The report for a set of IU_XRay findings: one sentence per finding, a fixed one, and an impression."""
    sentences = [present if findings[key] else absent for key, absent, present, _ in REPORT_FINDINGS]
    sentences.append("There is no pneumothorax.")
    positives = [phrase for key, _, _, phrase in REPORT_FINDINGS if findings[key]]
    impression = (
        "No acute cardiopulmonary abnormality." if not positives else ", ".join(positives).capitalize() + "."
    )
    return "Findings: " + " ".join(sentences) + " Impression: " + impression


def _draw_chest(
    spec: DemoSpec, rng: np.random.Generator, findings: dict[str, bool], lateral: bool
) -> Image.Image:
    """A schematic chest X-ray: dark lungs, a heart whose width shows cardiomegaly, a bright lower-left
    wedge for effusion and a small bright disc for a nodule."""
    img = _new_image(spec, rng)
    w, h = img.size
    draw = ImageDraw.Draw(img)
    draw.ellipse([0.1 * w, 0.1 * h, 0.9 * w, 0.9 * h], fill=25)  # lung fields
    heart_w = (0.42 if findings["cardiomegaly"] else 0.26) * w * (0.8 if lateral else 1.0)
    cx, cy = (0.45 if lateral else 0.55) * w, 0.62 * h
    draw.ellipse([cx - heart_w / 2, cy - 0.14 * h, cx + heart_w / 2, cy + 0.14 * h], fill=170)
    if findings["effusion"]:
        draw.polygon([(0.1 * w, 0.9 * h), (0.1 * w, 0.65 * h), (0.4 * w, 0.9 * h)], fill=210)
    if findings["nodule"]:
        r = 0.04 * w
        nx, ny = (0.7 if lateral else 0.3) * w, 0.3 * h
        draw.ellipse([nx - r, ny - r, nx + r, ny + r], fill=235)
    return img


def _build_report(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """Frontal view (and a lateral one on odd records) whose visible cues determine the report sentences."""
    samples = []
    for idx in range(n):
        findings = {key: bool(rng.random() < 0.4) for key, *_ in REPORT_FINDINGS}
        stems = _view_stems(spec, idx)
        images = [
            GenImage(stem, _draw_chest(spec, rng, findings, lateral=v == 1), spec.encoding(idx))
            for v, stem in enumerate(stems)
        ]
        question = spec.stem if len(stems) == 1 else spec.extra["two_view_stem"]
        samples.append(Sample(spec.task_type, question, report_text(findings), images))
    return samples


BUILDERS: dict[str, Callable[[DemoSpec, np.random.Generator, int], list[Sample]]] = {
    "classification": _build_classification,
    "tint_classification": _build_tint_classification,
    "multilabel": _build_multilabel,
    "chestdr": _build_chestdr,
    "detection": _build_detection,
    "instance": _build_instance,
    "counting": _build_counting,
    "bar_regression": _build_bar_regression,
    "iugc": _build_iugc,
    "report": _build_report,
}


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def save_image(gen: GenImage, path: Path) -> None:
    """Write a generated image in its encoding (see the module constants)."""
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


def question_file_name(dataset: str, split_folder: str) -> str:
    """The question file's name in a split folder (``IU_XRay_all_train.json`` for the IU_XRay training file)."""
    suffix = QUESTION_FILE_SUFFIX[split_folder]
    if dataset == REPORT_VARIANT_DATASET and split_folder == "training":
        return f"{dataset}_all_{suffix}.json"
    return f"{dataset}_questions_{suffix}.json"


def write_json(path: Path, records: list[dict]) -> None:
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _dataset_dir(root: Path, dataset: str, split_folder: str) -> Path:
    return root / split_folder / FLARE_DATASETS[dataset].modality / dataset


def _write_split(root: Path, spec: DemoSpec, split_folder: str, samples: list[Sample]) -> int:
    """Write one dataset's split folder: its images and question file(s). Returns the number of images."""
    ds_dir = _dataset_dir(root, spec.name, split_folder)
    image_folder = IMAGE_FOLDERS[split_folder]
    (ds_dir / image_folder).mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    records = []
    for s in samples:
        names = []
        for gen in s.images:
            if gen.file_name not in written:
                save_image(gen, ds_dir / image_folder / gen.file_name)
                written.add(gen.file_name)
            names.append(f"{image_folder}/{gen.file_name}")
        records.append(
            {
                "TaskType": s.task_type,
                "Modality": spec.modality_text,
                "ImageName": names[0] if len(names) == 1 else names,
                "Question": s.question,
                "Answer": s.answer,
                "Split": QUESTION_FILE_SUFFIX[split_folder],
            }
        )
    unlabelled = split_folder in UNLABELLED_FOLDERS
    write_json(
        ds_dir / question_file_name(spec.name, split_folder),
        [_blank(r) if unlabelled else r for r in records],
    )
    if split_folder == "validation-hidden" and spec.name == WITH_GT_DATASET:
        write_json(ds_dir / f"{spec.name}_questions_val_withGT.json", records)
    return len(written)


def _blank(record: dict) -> dict:
    return {**record, "Answer": ""}


def _prepare_output_dir(root: Path) -> None:
    """Create ``root``; a previous demo tree there (marked by MARKER_FILE) is replaced, anything else refused."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER_FILE).is_file():
            raise FileExistsError(
                f"{root} is not empty and was not written by make_demo_dataset.py; "
                "pass a new or empty --output_dir (nothing was written)"
            )
        for folder in SPLIT_FOLDERS.values():
            shutil.rmtree(root / folder, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)


def _apply_defects(root: Path, samples_per_split: int, seed: int) -> list[dict]:
    """Seed the six defects of :func:`demo_defects` into the training folders of a clean tree."""
    defects = demo_defects(samples_per_split)

    def train_dir(name: str) -> Path:
        return _dataset_dir(root, name, "training")

    def train_records(name: str) -> tuple[Path, list[dict]]:
        path = train_dir(name) / question_file_name(name, "training")
        return path, json.loads(path.read_text(encoding="utf-8"))

    _, retino = train_records("retino")
    (train_dir("retino") / retino[0]["ImageName"]).unlink()

    _, marrow = train_records("bone_marrow")
    (train_dir("bone_marrow") / marrow[1]["ImageName"]).write_bytes(
        np.random.default_rng([seed, 7]).bytes(200)
    )

    _, neo = train_records("neojaundice")
    (train_dir("neojaundice") / neo[0]["ImageName"][1]).unlink()

    path, bone = train_records("boneresorption")
    bone[0]["Answer"] = ""
    write_json(path, bone)

    path, busi = train_records("BUSI-det")
    write_json(path, busi + [dict(busi[0])])

    path = train_dir("endo") / question_file_name("endo", "training")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.4)])
    return defects


def make_demo_dataset(
    output_dir: str | Path,
    seed: int = DEFAULT_SEED,
    samples_per_split: int = DEFAULT_SAMPLES_PER_SPLIT,
    with_defects: bool = False,
) -> dict:
    """Write the demo FLARE25 tree under ``output_dir`` and return a summary:
    ``{"output_dir", "seed", "samples_per_split", "records": {dataset: {split_folder: n}}, "question_files",
    "images", "defects"}`` (``images`` counts image files written before defects were applied; ``records``
    counts the records in each standard question file as written, so BUSI-det training has n + 1 with
    defects). The same seed gives byte-identical files."""
    if samples_per_split < 1:
        raise ValueError(f"samples_per_split must be at least 1, got {samples_per_split}")
    if with_defects and samples_per_split < 2:
        raise ValueError(
            f"--with-defects needs samples_per_split >= 2 (bone_marrow record 1 is corrupted), got {samples_per_split}"
        )
    root = Path(output_dir).expanduser().resolve()
    _prepare_output_dir(root)
    records: dict[str, dict[str, int]] = {}
    images = files = 0
    for d, (name, spec) in enumerate(DEMO_SPECS.items()):
        records[name] = {}
        for s, split_folder in enumerate(SPLIT_FOLDERS.values()):
            rng = np.random.default_rng([seed, d, s])
            samples = BUILDERS[spec.builder](spec, rng, samples_per_split)
            images += _write_split(root, spec, split_folder, samples)
            records[name][split_folder] = len(samples)
            files += 2 if (split_folder == "validation-hidden" and name == WITH_GT_DATASET) else 1
    defects = _apply_defects(root, samples_per_split, seed) if with_defects else []
    if with_defects:
        records["BUSI-det"]["training"] += 1
    summary = {
        "seed": seed,
        "samples_per_split": samples_per_split,
        "records": records,
        "question_files": files,
        "images": images,
        "defects": defects,
    }
    (root / MARKER_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return {"output_dir": str(root), **summary}


def format_summary(summary: dict) -> str:
    """A short human-readable summary of :func:`make_demo_dataset`'s result."""
    n_records = sum(sum(v.values()) for v in summary["records"].values())
    lines = [
        f"Demo FLARE25 tree written to {summary['output_dir']} (seed {summary['seed']}, "
        f"{summary['samples_per_split']} records per question file)",
        f"  {len(summary['records'])} datasets x {len(SPLIT_FOLDERS)} split folders: "
        f"{summary['question_files']} question files, {n_records} records, {summary['images']} images",
    ]
    if summary["defects"]:
        lines.append(f"  {len(summary['defects'])} seeded defects:")
        for d in summary["defects"]:
            where = f"record {d['index']}" if "index" in d else d["file"]
            lines.append(f"    {d['dataset']}/{d['split_folder']} {where}: {d['reason']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", "--output-dir", required=True, help="folder to write the tree into")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (same seed, same bytes)")
    p.add_argument(
        "--samples_per_split",
        "--samples-per-split",
        type=int,
        default=DEFAULT_SAMPLES_PER_SPLIT,
        help="records in every question file",
    )
    p.add_argument(
        "--with-defects",
        "--with_defects",
        dest="with_defects",
        action="store_true",
        help="seed six realistic defects (missing/corrupt images, empty answer, duplicate, truncated file)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = make_demo_dataset(args.output_dir, args.seed, args.samples_per_split, args.with_defects)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
