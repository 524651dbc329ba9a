"""The 19 FLARE25 2D datasets: where they live in the raw tree and what they ask.

Pure data plus two helpers. The task types it names are defined in :mod:`qwenvl.flare.tasks`, the raw tree's
folder layout in :mod:`qwenvl.flare.raw`. ``data_conversion/dataset_configs.py`` re-exports the table for the
training guide's ``from dataset_configs import FLARE_DATASETS`` (run from inside ``data_conversion/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qwenvl.flare import tasks as T


@dataclass(frozen=True)
class DatasetConfig:
    """One FLARE25 dataset."""

    name: str  # folder name, case-sensitive (``BUSI-det``)
    modality: str  # modality folder, spelled exactly as on disk
    task_types: tuple[str, ...]  # normalised task types its question files contain
    max_images: int = 1  # most images a single record carries
    starter: bool = False  # one of the guide's five starter datasets
    known_counts: dict[str, int] = field(default_factory=dict)  # published record counts per split

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
        ),
        _cfg("fundus", "Retinography", [T.CLASSIFICATION]),
        _cfg("BUSI-det", "Ultrasound", [T.DETECTION], starter=True, known_counts={"train": 517, "val": 130}),
        _cfg("BUS-UCLM-det", "Ultrasound", [T.DETECTION], known_counts={"val": 45}),
        _cfg("BUSI", "Ultrasound", [T.CLASSIFICATION], known_counts={"val": 156}),
        _cfg("BUS-UCLM", "Ultrasound", [T.CLASSIFICATION], known_counts={"val": 161}),
        _cfg("iugc", "Ultrasound", [T.CLASSIFICATION, T.DETECTION, T.REGRESSION]),
        _cfg("boneresorption", "Xray", [T.REGRESSION], starter=True, known_counts={"train": 702}),
        _cfg("dental", "Xray", [T.CLASSIFICATION]),
        _cfg("periapical", "Xray", [T.MULTI_LABEL]),
        _cfg("IU_XRay", "Xray", [T.REPORT_GENERATION], max_images=2, known_counts={"val": 1945}),
        _cfg("chestdr", "Xray", [T.CLASSIFICATION, T.MULTI_LABEL], known_counts={"val": 970}),
        _cfg(
            "neojaundice",
            "Clinical",
            [T.CLASSIFICATION],
            max_images=3,
            starter=True,
            known_counts={"train": 596, "val": 149},
        ),
        _cfg("chromosome", "Microscopy", [T.INSTANCE_DETECTION]),
        _cfg("neurips22cell", "Microscopy", [T.COUNTING], known_counts={"val": 100}),
        _cfg("bone_marrow", "Microscopy", [T.CLASSIFICATION], starter=True, known_counts={"train": 722}),
        _cfg("endo", "Endoscopy", [T.CLASSIFICATION], max_images=2, known_counts={"val": 16}),
        _cfg("bcn20000", "Dermatology", [T.CLASSIFICATION], known_counts={"val": 716}),
        _cfg("CMMD", "Mammography", [T.CLASSIFICATION], max_images=2, known_counts={"val": 910}),
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
