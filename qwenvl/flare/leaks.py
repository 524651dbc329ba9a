"""Train/validation leaks: validation images byte-identical to training images.

Some validation-public images of the real FLARE25 data are byte-for-byte copies of training images; a score
on them measures memory, not generalisation. Leaks are found per IMAGE (SHA-256 of the file) and every record
that shows a leaked image is marked, so the records about one image stay together (iugc asks classification,
detection and regression about the same image: any split or de-duplication must group by image).

The converter reports leaks in ``conversion_report.json``, the validator warns about them, and
``scripts/evaluate_flare.py --drop_leaked_val`` leaves the leaked records out of an evaluation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qwenvl.flare.schema import images_of

TRAIN_VAL_LEAK = "train_val_leak"  # the name of this finding in reports and warnings


class ImageDigests:
    """The SHA-256 of each distinct image file, read once; ``None`` for a file that cannot be read."""

    def __init__(self) -> None:
        self._digests: dict[str, str | None] = {}

    def digest(self, path: str) -> str | None:
        if path not in self._digests:
            sha = hashlib.sha256()
            try:
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        sha.update(chunk)
                self._digests[path] = sha.hexdigest()
            except OSError:
                self._digests[path] = None
        return self._digests[path]


@dataclass(frozen=True)
class Leak:
    """One validation record that shows an image byte-identical to a training image."""

    index: int  # the record's index in the validation list
    image: str  # its (first) leaked image
    train_image: str  # a training image with the same bytes
    train_index: int  # the index of a training record that shows it


def record_image_paths(record: object) -> list[str]:
    """The image paths of a converted record, ``[]`` for anything that is not a record with images."""
    if not isinstance(record, dict):
        return []
    try:
        paths = images_of(record)
    except TypeError:
        return []
    return [p for p in paths if isinstance(p, str) and p]


def find_leaks(
    train_records: Sequence[object], val_records: Sequence[object], digests: ImageDigests | None = None
) -> list[Leak]:
    """One :class:`Leak` per validation record with at least one image byte-identical to an image of a
    training record, in validation order. Grouped by image: every record that shows a leaked image is one."""
    digests = digests or ImageDigests()
    train: dict[str, tuple[str, int]] = {}
    for t, record in enumerate(train_records):
        for path in record_image_paths(record):
            digest = digests.digest(path)
            if digest is not None:
                train.setdefault(digest, (path, t))
    leaks = []
    for v, record in enumerate(val_records):
        for path in record_image_paths(record):
            hit = train.get(digests.digest(path) or "")
            if hit is not None:
                leaks.append(Leak(v, path, hit[0], hit[1]))
                break
    return leaks


def leaked_image_count(leaks: Iterable[Leak]) -> int:
    """How many distinct validation images the leaks show."""
    return len({leak.image for leak in leaks})


def drop_leaked(
    records: Sequence[dict],
    train_by_dataset: dict[str, Sequence[object]],
    digests: ImageDigests | None = None,
) -> tuple[list[dict], dict[str, dict]]:
    """``records`` without those whose images are byte-identical to an image of their dataset's training
    records (``train_by_dataset[meta.dataset]``), in order, and per dataset what was dropped:
    ``{"records": n, "images": m}``, or ``{"checked": False}`` for a dataset with no training records given.
    Every record of a leaked image goes (grouped by image); records without ``meta.dataset`` are kept."""
    digests = digests or ImageDigests()
    by_dataset: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        meta = record.get("meta") if isinstance(record, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("dataset"), str):
            by_dataset.setdefault(meta["dataset"], []).append(i)
    drop: set[int] = set()
    found: dict[str, dict] = {}
    for dataset, indices in by_dataset.items():
        if dataset not in train_by_dataset:
            found[dataset] = {"checked": False}
            continue
        leaks = find_leaks(train_by_dataset[dataset], [records[i] for i in indices], digests)
        drop.update(indices[leak.index] for leak in leaks)
        found[dataset] = {"records": len(leaks), "images": leaked_image_count(leaks)}
    return [r for i, r in enumerate(records) if i not in drop], found
