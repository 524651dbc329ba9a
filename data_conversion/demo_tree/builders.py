"""Builders: a spec, a seeded generator and a record count -> the samples of one question file.

:data:`BUILDERS` holds one builder per FLARE25 task type, keyed by its normalised name
(:data:`qwenvl.flare.tasks.TASK_TYPES`), so a new task type needs exactly one new builder there. The two
datasets whose question files interleave task types (chestdr, iugc) have their own builder in
:data:`MIXED_TASK_BUILDERS`. :func:`builder_for` picks a dataset's builder from its task types in the dataset
table.

The images carry learnable signal: each class has its own drawn shape and colour, boxes tightly surround
bright objects, counts equal the number of drawn dots, regression values are a bar length or a caliper
distance, and reports describe visible cues. A builder draws only with the generator it is given, in a fixed
order, so one seed gives the same samples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from data_conversion.demo_tree.drawing import (
    SHAPES,
    Box,
    class_fill,
    draw_caliper,
    draw_class_cue,
    draw_objects,
    draw_shape,
    draw_texture_cue,
    new_image,
    place_box,
    place_boxes,
)
from data_conversion.demo_tree.image_files import GenImage
from data_conversion.demo_tree.specs import RGB, DemoSpec
from qwenvl.flare.datasets import FLARE_DATASETS
from qwenvl.flare.tasks import (
    CLASSIFICATION,
    COUNTING,
    DETECTION,
    INSTANCE_DETECTION,
    MULTI_LABEL,
    REGRESSION,
    REPORT_GENERATION,
    TASK_TYPES,
)

LETTERS = "ABCDEFGHIJ"
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
IUGC_MM_PER_PIXEL = 0.2  # pixel spacing stated in the iugc regression question


@dataclass
class Sample:
    """One question record before it is written (``answer`` is the ground truth, a str or number)."""

    task_type: str
    question: str
    answer: str | int | float
    images: list[GenImage]


Builder = Callable[[DemoSpec, np.random.Generator, int], list[Sample]]


# --------------------------------------------------------------------------------------------------------------
# Question text and record helpers
# --------------------------------------------------------------------------------------------------------------


def format_options(stem: str, labels: tuple[str, ...], style: str) -> str:
    """The question with inline options in one of the three FLARE25 styles (``colon``, ``dot``, ``paren``).
    Raises ``ValueError`` for any other style."""
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


# --------------------------------------------------------------------------------------------------------------
# One builder per task type
# --------------------------------------------------------------------------------------------------------------


def build_classification(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """Class k is drawn on every view of the record: as shape k in colour k; for a spec with ``tints``
    (neojaundice: pink vs yellow skin), as the view's background tint k; for a spec with ``texture``
    (bcn20000: dermoscopic structures), as fine texture k inside a lesion of one size and mean colour, which
    only a view at native resolution resolves. The answer is option letter k."""
    tints, texture = spec.extra.get("tints"), spec.extra.get("texture")
    question = format_options(spec.stem, spec.labels, spec.option_style)
    samples = []
    for idx, k in enumerate(_balanced(rng, n, len(spec.labels))):
        images = []
        for stem in _view_stems(spec, idx):
            if tints:
                img = new_image(spec, rng, tints[k])
            elif texture:
                img = draw_texture_cue(new_image(spec, rng), rng, k, *texture)
            else:
                img = new_image(spec, rng)
                draw_class_cue(spec, rng, img, k)
            images.append(GenImage(stem, img, spec.encoding(idx)))
        samples.append(Sample(spec.task_type, question, LETTERS[k], images))
    return samples


def _multilabel_sample(
    spec: DemoSpec, rng: np.random.Generator, idx: int, labels: tuple[str, ...], task_type: str, stem: str
) -> Sample:
    """Each label j present (p=0.4, at least one) is drawn as shape j in slot j of a row across the image."""
    present = rng.random(len(labels)) < 0.4
    if not present.any():
        present[int(rng.integers(len(labels)))] = True
    img = new_image(spec, rng)
    w, h = img.size
    draw = ImageDraw.Draw(img)
    slot = w / len(labels)
    r = min(slot * 0.35, h * 0.15)
    for j in np.flatnonzero(present):
        cx = slot * (j + 0.5) + float(rng.uniform(-0.1, 0.1)) * slot
        cy = float(rng.uniform(r + 2, h - r - 2))
        draw_shape(draw, SHAPES[j % len(SHAPES)], cx, cy, r, class_fill(spec, int(j)))
    answer = spec.extra["separator"].join(labels[j] for j in np.flatnonzero(present))
    question = _multilabel_question(stem, labels, spec.extra["separator"])
    return Sample(task_type, question, answer, _single(spec, idx, img))


def build_multilabel(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """Present labels drawn as shapes in a row; the answer joins their names with ``extra["separator"]``."""
    return [_multilabel_sample(spec, rng, idx, spec.labels, spec.task_type, spec.stem) for idx in range(n)]


def build_detection(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """1-3 bright ellipses on a dark noisy background; the answer is their boxes as a JSON string."""
    samples = []
    for idx in range(n):
        img = new_image(spec, rng)
        boxes = place_boxes(rng, *img.size, int(rng.integers(1, 4)), 0.12, 0.35)
        draw_objects(spec, rng, img, boxes, "ellipse")
        samples.append(Sample(spec.task_type, spec.stem, json.dumps(boxes), _single(spec, idx, img)))
    return samples


def build_instance_detection(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """2-4 chromosome ids, each with 1-2 elongated objects (mostly upright) in the id's colour; the answer is
    ``{"id": [boxes]}`` as a JSON string, ids in numeric order."""

    def chromosome_size() -> tuple[int, int]:
        long_side, short_side = int(rng.integers(30, 61)), int(rng.integers(8, 15))
        return (short_side, long_side) if rng.random() < 0.7 else (long_side, short_side)

    samples = []
    ids = list(INSTANCE_COLOURS)
    for idx in range(n):
        img = new_image(spec, rng)
        draw = ImageDraw.Draw(img)
        answer: dict[str, list[Box]] = {}
        taken: list[Box] = []
        for i in sorted(rng.choice(len(ids), size=int(rng.integers(2, 5)), replace=False)):
            for _ in range(int(rng.integers(1, 3))):
                box = place_box(rng, *img.size, chromosome_size, taken)
                if box is not None:
                    draw.rounded_rectangle(box, radius=3, fill=INSTANCE_COLOURS[ids[i]])
                    answer.setdefault(ids[i], []).append(box)
                    taken.append(box)
        samples.append(Sample(spec.task_type, spec.stem, json.dumps(answer), _single(spec, idx, img)))
    return samples


def build_counting(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """Bright dots, at most one per 16x16 cell (centred, small jitter); the answer is the number of dots,
    a JSON number on even records and a string on odd ones."""
    samples = []
    for idx in range(n):
        img = new_image(spec, rng)
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


def build_regression(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """A mid-gray track across the image, two thirds of its height, and a bright bar covering ``pct`` percent
    of it (tall, so the bar's length shows in every row of the few patches the demo's pixel budget leaves);
    the answer is pct (one decimal), a JSON number on even records and a string on odd ones."""
    samples = []
    for idx in range(n):
        img = new_image(spec, rng)
        w, h = img.size
        pct = round(float(rng.uniform(5, 95)), 1)
        x0, length = bar_geometry(w)
        thick = max(12, 2 * h // 3)
        y0 = int(rng.integers(h // 8, h - h // 8 - thick + 1))
        draw = ImageDraw.Draw(img)
        draw.rectangle([x0, y0, x0 + length - 1, y0 + thick - 1], fill=110)
        draw.rectangle([x0, y0 + 2, x0 + round(pct / 100 * length) - 1, y0 + thick - 3], fill=250)
        answer: float | str = pct if idx % 2 == 0 else f"{pct:.1f}"
        samples.append(Sample(spec.task_type, spec.stem, answer, _single(spec, idx, img)))
    return samples


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
    img = new_image(spec, rng)
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


def build_report(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
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


# --------------------------------------------------------------------------------------------------------------
# Datasets whose question files mix task types
# --------------------------------------------------------------------------------------------------------------


def build_chestdr(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
    """Even records: classification (shape cue); odd records: multi-label with labels joined by ", "."""
    classes = iter(_balanced(rng, (n + 1) // 2, len(spec.labels)))
    question = format_options(spec.stem, spec.labels, spec.option_style)
    samples = []
    for idx in range(n):
        if idx % 2 == 0:
            k = next(classes)
            img = new_image(spec, rng)
            draw_class_cue(spec, rng, img, k)
            samples.append(Sample("Classification", question, LETTERS[k], _single(spec, idx, img)))
        else:
            ml = spec.extra["ml_labels"]
            samples.append(
                _multilabel_sample(spec, rng, idx, ml, "Multi-label Classification", spec.extra["ml_stem"])
            )
    return samples


def build_iugc(spec: DemoSpec, rng: np.random.Generator, n: int) -> list[Sample]:
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
        img = new_image(spec, rng)
        w, h = img.size
        boxes = place_boxes(rng, w, h, int(rng.integers(1, 3)), 0.15, 0.35)
        draw_objects(spec, rng, img, boxes, "ellipse" if classes[g] == 1 else "rectangle")
        marks: list[Box] = []
        for _ in range(2):
            mark = place_box(rng, w, h, lambda: (10, 10), boxes + marks, gap=6, tries=500)
            if mark is None:
                raise RuntimeError(f"no room for a caliper in a {w}x{h} iugc image")
            marks.append(mark)
        centres = [(m[0] + 5, m[1] + 5) for m in marks]
        draw = ImageDraw.Draw(img)
        for x, y in centres:
            draw_caliper(draw, x, y)
        distance = round(math.dist(centres[0], centres[1]) * IUGC_MM_PER_PIXEL, 1)
        image = _single(spec, g, img)  # one file, shared by the group's three records
        samples += [
            Sample("Classification", cls_question, LETTERS[classes[g]], image),
            Sample("Detection", det_question, json.dumps(boxes), image),
            Sample("regression", reg_question, distance if g % 2 == 0 else f"{distance:.1f}", image),
        ]
    return samples[:n]


# --------------------------------------------------------------------------------------------------------------
# Which builder draws which dataset
# --------------------------------------------------------------------------------------------------------------

BUILDERS: dict[str, Builder] = {
    CLASSIFICATION: build_classification,
    MULTI_LABEL: build_multilabel,
    DETECTION: build_detection,
    INSTANCE_DETECTION: build_instance_detection,
    COUNTING: build_counting,
    REGRESSION: build_regression,
    REPORT_GENERATION: build_report,
}
assert set(BUILDERS) == set(TASK_TYPES), "BUILDERS needs exactly one builder per normalised task type"

MIXED_TASK_BUILDERS: dict[str, Builder] = {"chestdr": build_chestdr, "iugc": build_iugc}


def builder_for(spec: DemoSpec) -> Builder:
    """The builder of a dataset: its own in MIXED_TASK_BUILDERS when its question files mix task types,
    else the one in BUILDERS for its single task type (from ``FLARE_DATASETS``). Raises ``KeyError`` naming
    the dataset and the table to extend when a dataset mixes task types and has no builder of its own."""
    if spec.name in MIXED_TASK_BUILDERS:
        return MIXED_TASK_BUILDERS[spec.name]
    task_types = FLARE_DATASETS[spec.name].task_types
    if len(task_types) != 1:
        raise KeyError(
            f"dataset {spec.name!r} mixes task types {task_types}; add a builder for it to "
            "MIXED_TASK_BUILDERS in data_conversion/demo_tree/builders.py"
        )
    return BUILDERS[task_types[0]]
