"""Image Tests: every image the checked datasets reference is checked for existence; a seeded sample
(``--num_images``, spread across the datasets; ``--all_images`` for all) is decoded with the training loader
(``load_rgb``). Missing and corrupt images are kept with the dataset and record that uses them."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from qwenvl.tools.data_check.annotations import AnnotationResult, DatasetAnnotations
from qwenvl.tools.data_check.config import DataCheckConfig


@dataclass(frozen=True)
class ImageProblem:
    """A missing or undecodable image and the first record that uses it."""

    path: str
    dataset: str
    record: int
    detail: str

    def describe(self) -> str:
        return f"{self.path} ({self.dataset} record {self.record}){': ' + self.detail if self.detail else ''}"


@dataclass
class ImageResult:
    """Image Tests: existence of every referenced image, full decode of a seeded sample."""

    referenced: int = 0
    tested: int = 0
    per_dataset: dict[str, int] = field(default_factory=dict)  # decoded per dataset
    missing: list[ImageProblem] = field(default_factory=list)
    corrupt: list[ImageProblem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.tested > 0 and not self.missing and not self.corrupt


def _sample_images(
    datasets: Sequence[DatasetAnnotations], existing: set[str], n: int | None, seed: int
) -> list[tuple[str, str]]:
    """``(dataset, path)`` pairs: each dataset's existing images shuffled by ``(seed, name)``, taken round-robin
    until ``n`` (None: all)."""
    queues = []
    for d in datasets:
        paths = [p for p in d.images if p in existing]
        random.Random(f"{seed}:{d.name}").shuffle(paths)
        queues.append((d.name, paths))
    chosen, seen = [], set()
    depth = 0
    while (n is None or len(chosen) < n) and any(depth < len(q) for _, q in queues):
        for name, q in queues:
            if depth < len(q) and q[depth] not in seen and (n is None or len(chosen) < n):
                chosen.append((name, q[depth]))
                seen.add(q[depth])
        depth += 1
    return chosen


def run_image_tests(ann: AnnotationResult, cfg: DataCheckConfig) -> ImageResult:
    """Existence of every image of the datasets, and a full decode (training loader) of a seeded sample."""
    from qwenvl.flare.images import load_rgb

    res = ImageResult()
    owner: dict[str, tuple[str, int]] = {}
    for d in ann.datasets:
        for path, index in d.images.items():
            owner.setdefault(path, (d.name, index))
    res.referenced = len(owner)
    existing = set()
    for path, (name, index) in owner.items():
        if os.path.isfile(path):
            existing.add(path)
        else:
            res.missing.append(ImageProblem(path, name, index, ""))
    for name, path in _sample_images(
        ann.datasets, existing, None if cfg.all_images else cfg.num_images, cfg.seed
    ):
        res.tested += 1
        res.per_dataset[name] = res.per_dataset.get(name, 0) + 1
        try:
            with load_rgb(path) as img:
                if img.width < 1 or img.height < 1:
                    raise ValueError(f"empty image {img.size}")
        except Exception as e:  # noqa: BLE001 - whatever the decoder raises, training would skip this sample
            name, index = owner[path]
            res.corrupt.append(ImageProblem(path, name, index, f"{type(e).__name__}: {e}"))
    return res
