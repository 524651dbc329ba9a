"""Dataset registry: names the training and evaluation code accept, and ``name%NN`` sampling.

``data_dict`` maps a name to ``{"annotation_path", "data_path", "labelled", ...}``. It is filled at import time
from three sources, later ones overriding earlier ones:

1. every converted file ``<dataset>_<split>.json`` in the converted-data folder (``$FLARE25_CONVERTED_DIR``,
   else ``<repo>/converted_data``): ``flare_<name>`` for train (name lower-cased, ``-`` -> ``_``),
   ``flare_<name>_val``, ``flare_<name>_val_hidden`` and ``flare_<name>_test``;
2. JSON files listed in ``$QWENVL_EXTRA_DATASETS`` (``:``-separated), each mapping a name to
   ``{"annotation_path": ..., "data_path": ...}`` (relative paths are resolved against that JSON file's folder):
   register your own Qwen3-VL JSON without editing this package;
3. ``register_dataset(...)`` calls in your own code.

A ``--dataset_use`` entry may also be a path to a Qwen3-VL JSON file (``/data/my_train.json%50``).

Sampling: ``name%NN`` keeps NN percent of the records. NN may be fractional (``%12.5``) and may exceed 100
(``%250`` = every record twice plus a random half). The draw depends only on the seed and the name, so every
process of a distributed run trains on the same subset.

Image budget: ``name@MAX`` or ``name@MIN-MAX`` gives that dataset's images at most MAX (at least MIN) visual
tokens, 32x32-pixel blocks (``flare_chromosome%100@1296``, ``flare_neurips22cell@256-1024``), over the dataset
table's budget or the run's global one (:mod:`qwenvl.flare.pixels`).

Class balance: ``name+balanced`` draws a classification / multi-label dataset's share equally from its classes;
``--mixture_temperature`` shares the draws between datasets by size^(1/T) (:mod:`qwenvl.data.mixture`).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenvl.flare import defaults
from qwenvl.flare.datasets import FLARE_DATASETS, STARTER_DATASETS, registry_name
from qwenvl.flare.paths import default_converted_dir
from qwenvl.flare.pixels import BudgetPlan, dataset_key

LABELLED_SPLITS = ("train", "val")
CONVERT_SCRIPT = "uv run python data_conversion/convert_flare_to_qwen3vl.py"

data_dict: dict[str, dict] = {}

_SPLIT_ORDER = ("train", "val", "val_hidden", "test")
_DATASET_ORDER = list(STARTER_DATASETS) + [d for d in FLARE_DATASETS if d not in STARTER_DATASETS]
_FILE_RE = re.compile(r"^(?P<dataset>.+?)_(?P<split>train|val_hidden|val|test)\.json$")


def _scan_converted(converted_dir: Path) -> dict[str, dict]:
    found: dict[str, dict] = {}
    if not converted_dir.is_dir():
        return found
    matches = [(p, _FILE_RE.match(p.name)) for p in converted_dir.glob("*.json")]
    matches = [(p, m["dataset"], m["split"]) for p, m in matches if m and m["dataset"] in FLARE_DATASETS]
    # Training files first, the guide's five starters in its order, then the others in table order.
    matches.sort(key=lambda t: (_SPLIT_ORDER.index(t[2]), _DATASET_ORDER.index(t[1])))
    for path, dataset, split in matches:
        found[registry_name(dataset, split)] = {
            "annotation_path": str(path),
            "data_path": "",
            "dataset": dataset,
            "split": split,
            "labelled": split in LABELLED_SPLITS,
        }
    return found


def _load_extra(json_path: Path) -> dict[str, dict]:
    try:
        entries = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(
            f"cannot read the dataset list {json_path} named in $QWENVL_EXTRA_DATASETS: {e}. "
            'It must be a JSON object {"name": {"annotation_path": "...", "data_path": ""}}.'
        ) from e
    out = {}
    for name, entry in entries.items():
        if "annotation_path" not in entry:
            raise ValueError(f"{json_path}: dataset {name!r} has no 'annotation_path'")
        ann = Path(entry["annotation_path"])
        ann = ann if ann.is_absolute() else (json_path.parent / ann).resolve()
        out[name] = {
            "annotation_path": str(ann),
            "data_path": entry.get("data_path", ""),
            "labelled": bool(entry.get("labelled", True)),
        }
    return out


def refresh_registry(converted_dir: str | Path | None = None) -> dict[str, dict]:
    """Rebuild ``data_dict`` (in place) from the converted-data folder and ``$QWENVL_EXTRA_DATASETS``."""
    data_dict.clear()
    data_dict.update(_scan_converted(Path(converted_dir) if converted_dir else default_converted_dir()))
    for item in filter(None, os.environ.get("QWENVL_EXTRA_DATASETS", "").split(os.pathsep)):
        data_dict.update(_load_extra(Path(item)))
    return data_dict


def register_dataset(
    name: str, annotation_path: str | Path, data_path: str = "", labelled: bool = True
) -> None:
    """Register a Qwen3-VL JSON file under ``name`` for this process."""
    data_dict[name] = {"annotation_path": str(annotation_path), "data_path": data_path, "labelled": labelled}


@dataclass(frozen=True)
class DatasetUse:
    """One entry of a ``--dataset_use`` string: ``NAME[%PERCENT][@[MIN-]MAX][+balanced]``."""

    name: str
    rate: float = 1.0  # fraction of records to draw (1.0 = all, 2.5 = twice plus half)
    visual_tokens: tuple[int | None, int] | None = None  # (min or None, max) tokens per image from @...
    balanced: bool = False  # +balanced: draws spread equally over the dataset's classes


@dataclass(frozen=True)
class DatasetSpec:
    """One resolved ``--dataset_use`` entry."""

    name: str
    annotation_path: str
    data_path: str
    labelled: bool
    rate: float  # fraction of records to draw (1.0 = all, 2.5 = twice plus half)
    visual_tokens: tuple[int | None, int] | None = None  # an @MIN-MAX override of the image budget
    balanced: bool = False  # +balanced: draws spread equally over the dataset's classes


_SUFFIX_RE = re.compile(r"[%@+]")
FLAGS = ("balanced",)  # the words a +FLAG part may name


def _parse_rate(text: str, item: str, name: str) -> float:
    try:
        rate = float(text) / 100.0
    except ValueError:
        raise ValueError(f"bad sampling rate in {item!r}: expected NAME%NUMBER, e.g. {name}%50") from None
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"sampling rate in {item!r} must be a positive number of percent")
    return rate


def parse_dataset_use(spec: str) -> list[DatasetUse]:
    """``"a%50,b,c%250@1024"`` -> ``[DatasetUse("a", 0.5), DatasetUse("b"), DatasetUse("c", 2.5, (None,
    1024))]``. Each entry is a name followed by optional parts in any order: ``%PERCENT`` (sampling),
    ``@MAX`` / ``@MIN-MAX`` (visual tokens per image) and ``+balanced`` (class balance). ``ValueError`` names
    the entry and the fix."""
    from qwenvl.flare.pixels import parse_token_range

    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        first = _SUFFIX_RE.search(item)
        name = (item[: first.start()] if first else item).strip()
        rate, tokens, balanced = 1.0, None, False
        parts = re.findall(r"([%@+])([^%@+]*)", item[first.start() :]) if first else []
        seen = [marker for marker, _ in parts]
        if len(seen) != len(set(seen)) or not name:
            raise ValueError(
                f"bad dataset entry {item!r}: expected NAME[%PERCENT][@[MIN-]MAX][+balanced], e.g. "
                "flare_chromosome%50@1296 or flare_retino+balanced (each part at most once)"
            )
        for marker, value in parts:
            if marker == "%":
                rate = _parse_rate(value, item, name)
            elif marker == "@":
                tokens = parse_token_range(value, item)
            elif value.strip() in FLAGS:
                balanced = True
            else:
                raise ValueError(f"unknown flag +{value.strip()} in {item!r}: the one flag is +balanced")
        out.append(DatasetUse(name, rate, tokens, balanced))
    if not out:
        raise ValueError("empty dataset list: give names such as flare_retino,flare_busi_det%50")
    return out


def _unknown_name_error(name: str) -> KeyError:
    lines = [f"unknown dataset {name!r}."]
    stem = re.sub(r"_(val_hidden|val|test)$", "", name)
    split = name[len(stem) + 1 :] or "train"
    folder = next((d for d in FLARE_DATASETS if registry_name(d) == stem), None)
    if folder:
        cli_split = {"val_hidden": "val"}.get(split, split)
        lines.append(
            f"It is FLARE25 dataset '{folder}', not converted yet (looked in {default_converted_dir()}). "
            f"Convert it with:\n  {CONVERT_SCRIPT} --datasets {folder} --splits {cli_split}"
        )
    registered = ", ".join(sorted(data_dict)) or "(none: run the converter first)"
    lines.append(f"Registered datasets: {registered}")
    lines.append(f"Known FLARE25 datasets: {', '.join(registry_name(d) for d in FLARE_DATASETS)}")
    return KeyError("\n".join(lines))


def resolve_datasets(spec: str, require_labels: bool = True) -> list[DatasetSpec]:
    """Resolve a ``--dataset_use`` string into registry entries; errors list every problem at once."""
    specs, errors = [], []
    for use in parse_dataset_use(spec):
        name = use.name
        if name.endswith(".json") and name not in data_dict:
            entry = {
                "annotation_path": str(Path(name).expanduser().resolve()),
                "data_path": "",
                "labelled": True,
            }
        elif name in data_dict:
            entry = data_dict[name]
        else:
            errors.append(str(_unknown_name_error(name).args[0]))
            continue
        if not Path(entry["annotation_path"]).is_file():
            errors.append(f"{name}: annotation file {entry['annotation_path']} does not exist")
            continue
        if require_labels and not entry.get("labelled", True):
            errors.append(
                f"{name} holds inference inputs without answers ({entry['annotation_path']}); it cannot be "
                "used for training or eval loss. Use the labelled '_val' files (validation-public) instead."
            )
            continue
        specs.append(
            DatasetSpec(
                name,
                entry["annotation_path"],
                entry.get("data_path", ""),
                entry["labelled"],
                use.rate,
                use.visual_tokens,
                use.balanced,
            )
        )
    if errors:
        raise ValueError("\n".join(errors))
    return specs


def plan_image_budgets(
    dataset_use: str,
    policy: str = "auto",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    eval_dataset_use: str = "",
) -> BudgetPlan:
    """The image budgets of a run over ``dataset_use`` (and ``eval_dataset_use``): ``policy`` resolved
    (``auto``: one global budget when ``min_pixels`` / ``max_pixels`` is given, else each dataset the table's),
    the global budget from ``min_pixels`` / ``max_pixels`` (each defaulting to the guide's), and every
    ``NAME@TOKENS`` override of either list. An override given in both lists must agree."""
    from qwenvl.flare.pixels import ImageBudget, build_plan, resolve_policy

    resolved = resolve_policy(policy, explicit_global=min_pixels is not None or max_pixels is not None)
    default = ImageBudget(
        defaults.MIN_PIXELS if min_pixels is None else int(min_pixels),
        defaults.MAX_PIXELS if max_pixels is None else int(max_pixels),
    )
    uses = parse_dataset_use(dataset_use) + (parse_dataset_use(eval_dataset_use) if eval_dataset_use else [])
    overrides: dict[str, tuple[int | None, int]] = {}
    for use in uses:
        if use.visual_tokens is None:
            continue
        key = dataset_key(use.name) or use.name
        if overrides.get(key, use.visual_tokens) != use.visual_tokens:
            raise ValueError(
                f"dataset {key} has two image budgets, @{_tokens_text(overrides[key])} and "
                f"@{_tokens_text(use.visual_tokens)}: give the same one in --dataset_use and --eval_dataset_use"
            )
        overrides[key] = use.visual_tokens
    return build_plan(resolved, default, [use.name for use in uses], overrides)


def _tokens_text(tokens: tuple[int | None, int]) -> str:
    return f"{tokens[0]}-{tokens[1]}" if tokens[0] else str(tokens[1])


def sample_indices(n: int, rate: float, seed: int, name: str) -> list[int]:
    """Indices drawn for ``name%(rate*100)``: whole passes plus a seeded sample of the rest
    (:func:`qwenvl.data.mixture.seeded_draw` of ``round(n * rate)`` draws).

    Depends only on (n, rate, seed, name), never on the process, so all ranks draw the same subset."""
    from qwenvl.data.mixture import seeded_draw

    return seeded_draw(range(n), int(round(n * rate)), seed, name)


def read_records(spec: DatasetSpec) -> list[dict]:
    """Every record of one registered file, in file order, each with a ``_source`` block (registry name,
    annotation path, record index) so later stages can report problems precisely."""
    path = Path(spec.annotation_path)
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); re-run the conversion for dataset {spec.name}"
        ) from e
    if not isinstance(records, list):
        raise ValueError(f"{path} must hold a JSON list of records, found {type(records).__name__}")
    bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
    if bad:
        raise ValueError(
            f"{path}: records {bad[:10]} are not JSON objects; each record must be "
            '{"image": ..., "conversations": [...]} (see qwenvl/flare/schema.py)'
        )
    source = {"dataset": spec.name, "file": str(path), "data_path": spec.data_path}
    return [{**r, "_source": {**source, "index": i}} for i, r in enumerate(records)]


def load_annotations(spec: DatasetSpec, seed: int) -> list[dict]:
    """Read one registered file and apply its sampling rate (:func:`sample_indices`)."""
    records = read_records(spec)
    return [dict(records[i]) for i in sample_indices(len(records), spec.rate, seed, spec.name)]


def draw_training_records(
    specs: list[DatasetSpec], seed: int, temperature: float = 1.0
) -> tuple[list[dict], list[Any]]:
    """The training draw of several registered files: each dataset's ``%NN`` size, shared by the mixture
    temperature, balanced over classes where ``+balanced`` asks (:func:`qwenvl.data.mixture.plan_mixture`).
    ``(records in draw order, one DatasetDraw per dataset)``; ``ValueError`` names a dataset left with no
    draw or a +balanced dataset without classes."""
    from qwenvl.data.mixture import plan_mixture

    files = [(spec, read_records(spec)) for spec in specs]
    draws = plan_mixture([(s.name, recs, s.rate, s.balanced) for s, recs in files], temperature, seed)
    records = [dict(recs[i]) for (_, recs), draw in zip(files, draws) for i in draw.indices]
    return records, draws


refresh_registry()
