"""The demo's per-dataset table: how each of the 19 FLARE25 datasets is drawn and asked about.

One :class:`DemoSpec` per dataset, in :data:`~qwenvl.flare.datasets.FLARE_DATASETS` order. A spec holds the
raw spellings written to the question files (``TaskType``, free-text ``Modality``, question stem, option
labels and option style), the image geometry and colours, how many views a record has, and which image
encoding each record's files get. Which builder draws a dataset follows from its task types in the dataset
table (:func:`data_conversion.demo_tree.builders.builder_for`), so a spec never names one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from data_conversion.demo_tree.image_files import JPG, JPG_CMYK, JPG_EXIF6, PNG, PNG_I16, PNG_P, PNG_RGBA
from qwenvl.flare.datasets import FLARE_DATASETS

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class DemoSpec:
    """How the demo draws and asks about one dataset.

    ``extra`` holds the settings only some builders read: ``tints`` (classification drawn as a background
    tint per class instead of a shape), ``separator`` (how multi-label answers join their labels),
    ``ml_labels`` and ``ml_stem`` (chestdr's multi-label records) and ``two_view_stem`` (the report question
    of a two-view record)."""

    name: str
    task_type: str  # raw TaskType spelling written to the files ("" when it is set per record)
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
    extra: dict = field(default_factory=dict)  # builder-specific settings (see above)


def _every(n: int, special: str, other: str) -> Callable[[int], str]:
    return lambda idx: special if idx % n == 0 else other


DEMO_SPECS: dict[str, DemoSpec] = {
    s.name: s
    for s in (
        DemoSpec(
            "retino",
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
            "Classification",
            "Dermoscopy",
            "What is the most likely diagnosis of this skin lesion?",
            ("Nevus", "Melanoma", "Basal cell carcinoma"),
            "paren",
            width=(224, 320),
            height=(192, 256),
            background=(200, 150, 130),
            noise=10,
            encoding=_every(3, JPG_CMYK, JPG),
            # The resolution test: the class is a 2-pixel texture (drawing.TEXTURES) of these two colours.
            extra={"texture": ((30, 30, 30), (230, 230, 230))},
        ),
        DemoSpec(
            "CMMD",
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
