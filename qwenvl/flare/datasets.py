"""The 19 FLARE25 2D datasets: where they live in the raw tree and what they ask.

Pure data plus two helpers. The task types it names are defined in :mod:`qwenvl.flare.tasks`, the raw tree's
folder layout in :mod:`qwenvl.flare.raw`. ``data_conversion/dataset_configs.py`` re-exports the table for the
training guide's ``from dataset_configs import FLARE_DATASETS`` (run from inside ``data_conversion/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qwenvl.flare import tasks as T

# Budgets in visual tokens per image (one token = a 32x32-pixel block); the square view each allows in brackets.
GUIDE_TOKENS = 49  # the guide's max_pixels 50,176 (224x224): enough where the answer is a global appearance
DETAIL_TOKENS = 256  # 512x512: classification and measurement from fine detail
BOX_TOKENS = 576  # 768x768: box edges of the detection sets
SMALL_OBJECT_TOKENS = 1024  # 1024x1024: hundreds of small objects to count
CHROMOSOME_TOKENS = 1296  # 1152x1152: 46 chromosomes to locate one by one


@dataclass(frozen=True)
class DatasetConfig:
    """One FLARE25 dataset."""

    name: str  # folder name, case-sensitive (``BUSI-det``)
    modality: str  # modality folder, spelled exactly as on disk
    task_types: tuple[str, ...]  # normalised task types its question files contain
    max_images: int = 1  # most images a single record carries
    starter: bool = False  # one of the guide's five starter datasets
    known_counts: dict[str, int] = field(default_factory=dict)  # published record counts per split
    # The image budget under the per-dataset pixel policy, in visual tokens (32x32-pixel blocks; the
    # arithmetic is qwenvl.flare.pixels'): at most ``visual_tokens`` per image, at least ``min_visual_tokens``
    # (None: the guide's min_pixels, 784). ``budget_reason`` says why, in one line.
    visual_tokens: int = GUIDE_TOKENS
    min_visual_tokens: int | None = None
    budget_reason: str = ""

    @property
    def multi_image(self) -> bool:
        return self.max_images > 1

    @property
    def registry_name(self) -> str:
        """Name of the training split in ``qwenvl.data.data_dict`` (``flare_busi_det``)."""
        return registry_name(self.name)


def registry_name(dataset: str, split: str = "train") -> str:
    """``BUSI-det`` -> ``flare_busi_det``; other splits get a suffix: ``flare_busi_det_val``."""
    base = "flare_" + re.sub(r"[^0-9a-z]+", "_", dataset.lower()).strip("_")
    return base if split == "train" else f"{base}_{split}"


def _cfg(name, modality, task_types, **kw) -> tuple[str, DatasetConfig]:
    return name, DatasetConfig(name=name, modality=modality, task_types=tuple(task_types), **kw)


FLARE_DATASETS: dict[str, DatasetConfig] = dict(
    [
        _cfg(
            "retino",
            "Retinography",
            [T.CLASSIFICATION],
            starter=True,
            known_counts={"train": 1113, "val": 279},
            visual_tokens=DETAIL_TOKENS,
            budget_reason="the grade rests on microaneurysms and small haemorrhages, a few pixels across",
        ),
        _cfg(
            "fundus",
            "Retinography",
            [T.CLASSIFICATION],
            visual_tokens=DETAIL_TOKENS,
            budget_reason="optic-disc cupping and retinal lesions are fine detail of the fundus photograph",
        ),
        _cfg(
            "BUSI-det",
            "Ultrasound",
            [T.DETECTION],
            starter=True,
            known_counts={"train": 517, "val": 130},
            visual_tokens=BOX_TOKENS,
            budget_reason="box edges at IoU > 0.5: most ultrasound frames stay near their native size",
        ),
        _cfg(
            "BUS-UCLM-det",
            "Ultrasound",
            [T.DETECTION],
            known_counts={"val": 45},
            visual_tokens=BOX_TOKENS,
            budget_reason="box edges at IoU > 0.5, as BUSI-det",
        ),
        _cfg(
            "BUSI",
            "Ultrasound",
            [T.CLASSIFICATION],
            known_counts={"val": 156},
            visual_tokens=DETAIL_TOKENS,
            budget_reason="benign against malignant rests on the lesion's margin and echo texture",
        ),
        _cfg(
            "BUS-UCLM",
            "Ultrasound",
            [T.CLASSIFICATION],
            known_counts={"val": 161},
            visual_tokens=DETAIL_TOKENS,
            budget_reason="lesion margin and texture, as BUSI",
        ),
        _cfg(
            "iugc",
            "Ultrasound",
            [T.CLASSIFICATION, T.DETECTION, T.REGRESSION],
            visual_tokens=BOX_TOKENS,
            budget_reason="boxes and a measurement on the same frames: box precision decides both",
        ),
        _cfg(
            "boneresorption",
            "Xray",
            [T.REGRESSION],
            starter=True,
            known_counts={"train": 702},
            visual_tokens=DETAIL_TOKENS,
            budget_reason="a percentage read off the bone level along the root: a measurement needs detail",
        ),
        _cfg(
            "dental",
            "Xray",
            [T.CLASSIFICATION],
            visual_tokens=DETAIL_TOKENS,
            budget_reason="caries and restorations are small against the whole radiograph",
        ),
        _cfg(
            "periapical",
            "Xray",
            [T.MULTI_LABEL],
            visual_tokens=DETAIL_TOKENS,
            budget_reason="several small periapical lesions per image, each a label to find",
        ),
        _cfg(
            "IU_XRay",
            "Xray",
            [T.REPORT_GENERATION],
            max_images=2,
            known_counts={"val": 1945},
            visual_tokens=DETAIL_TOKENS,
            budget_reason="reports name small findings (nodules, lines, tubes) that a 224 view loses",
        ),
        _cfg(
            "chestdr",
            "Xray",
            [T.CLASSIFICATION, T.MULTI_LABEL],
            known_counts={"val": 970},
            visual_tokens=DETAIL_TOKENS,
            budget_reason="several chest findings per film, some small (nodules, effusion angles)",
        ),
        _cfg(
            "neojaundice",
            "Clinical",
            [T.CLASSIFICATION],
            max_images=3,
            starter=True,
            known_counts={"train": 596, "val": 149},
            budget_reason="jaundice is a skin colour, visible at any size; three photographs per record",
        ),
        _cfg(
            "chromosome",
            "Microscopy",
            [T.INSTANCE_DETECTION],
            visual_tokens=CHROMOSOME_TOKENS,
            min_visual_tokens=256,
            budget_reason="46 chromosomes to box one by one: at 49 tokens several share one token",
        ),
        _cfg(
            "neurips22cell",
            "Microscopy",
            [T.COUNTING],
            known_counts={"val": 100},
            visual_tokens=SMALL_OBJECT_TOKENS,
            min_visual_tokens=256,
            budget_reason="hundreds of cells to count: at 49 tokens dozens of cells fall into one token",
        ),
        _cfg(
            "bone_marrow",
            "Microscopy",
            [T.CLASSIFICATION],
            starter=True,
            known_counts={"train": 722},
            visual_tokens=DETAIL_TOKENS,
            budget_reason="cell morphology: nucleus shape, chromatin and granules",
        ),
        _cfg(
            "endo",
            "Endoscopy",
            [T.CLASSIFICATION],
            max_images=2,
            known_counts={"val": 16},
            budget_reason="the finding fills much of the endoscopic view; two views per record",
        ),
        _cfg(
            "bcn20000",
            "Dermatology",
            [T.CLASSIFICATION],
            known_counts={"val": 716},
            visual_tokens=DETAIL_TOKENS,
            budget_reason="dermoscopic structures (pigment network, dots, streaks) are fine detail",
        ),
        _cfg(
            "CMMD",
            "Mammography",
            [T.CLASSIFICATION],
            max_images=2,
            known_counts={"val": 910},
            visual_tokens=BOX_TOKENS,
            budget_reason="microcalcifications are a few pixels of a mammogram thousands wide; two views",
        ),
    ]
)

STARTER_DATASETS: tuple[str, ...] = ("neojaundice", "retino", "BUSI-det", "boneresorption", "bone_marrow")
assert set(STARTER_DATASETS) == {n for n, c in FLARE_DATASETS.items() if c.starter}


def resolve_dataset_name(name: str) -> str:
    """Accept a dataset name in any case, or its registry form (``busi_det``, ``flare_busi_det``), and return
    the folder name. Raises ``KeyError`` listing the valid names."""
    if name in FLARE_DATASETS:
        return name
    lowered = name.lower()
    key = registry_name(lowered[len("flare_") :] if lowered.startswith("flare_") else lowered)
    for real in FLARE_DATASETS:
        if registry_name(real) == key:
            return real
    raise KeyError(f"unknown FLARE25 dataset {name!r}; valid names: {', '.join(FLARE_DATASETS)}")
