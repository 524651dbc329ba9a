"""How many times each record is drawn for training: ``%NN`` rates, a mixture temperature and class balance.

Three knobs, applied in this order to the datasets of a ``--dataset_use`` list:

1. ``name%NN`` scales a dataset's size: ``s = n x NN / 100`` draws for ``n`` records;
2. ``--mixture_temperature T`` redistributes the total over the datasets in proportion to ``s^(1/T)``, so the
   number of draws stays ``sum(s)``: ``T = 1`` keeps the sizes (the guide's mix), ``T = 2`` is square-root
   sampling (a dataset 100 times smaller is drawn 10 times less, not 100), ``T -> inf`` gives every dataset an
   equal share. Small datasets are seen more often, without repeating them absurdly;
3. ``name+balanced`` draws a classification or multi-label dataset's share equally from each of its classes
   (the metric is balanced accuracy: every class counts the same, so every class is trained on as often).
   A classification record's class is its answer; a multi-label record's is its rarest label in the dataset.
   Records of the dataset's other task types (chestdr mixes both, iugc adds boxes and numbers) keep their
   proportional part of the share.

Every count is a whole number of draws: whole passes over the records, then a seeded sample of the rest. The
draw depends only on the seed and the dataset name (never the process or the epoch), so every rank trains on
the same records and a resumed run continues the same epoch; the sampler shuffles them per epoch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qwenvl.flare.tasks import TASKS, normalize_task_type


def seeded_draw(members: Sequence[int], count: int, seed: int, name: str) -> list[int]:
    """``count`` draws from ``members``: whole passes in order, then a seeded sample (without repeats) of the
    rest; a pure function of ``(members, count, seed, name)``."""
    if count <= 0 or not members:
        return []
    whole, rest = divmod(count, len(members))
    extra = sorted(random.Random(f"{seed}:{name}").sample(list(members), rest)) if rest else []
    return [i for _ in range(whole) for i in members] + extra


def temperature_counts(sizes: Mapping[str, float], temperature: float) -> dict[str, float]:
    """Draws per dataset (real numbers): the total ``sum(sizes)`` shared in proportion to
    ``size^(1/temperature)``. ``ValueError`` for a temperature that is not positive and finite."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"--mixture_temperature {temperature!r} must be a positive number: 1 keeps the datasets' sizes, "
            "2 draws in proportion to their square root, larger values approach equal shares"
        )
    total = float(sum(sizes.values()))
    weights = {name: size ** (1.0 / temperature) if size > 0 else 0.0 for name, size in sizes.items()}
    norm = sum(weights.values())
    return {name: total * w / norm if norm else 0.0 for name, w in weights.items()}


def _answer(record: dict) -> str:
    turns = record.get("conversations") or []
    answer = turns[-1].get("value", "") if turns and isinstance(turns[-1], dict) else ""
    return answer if isinstance(answer, str) else ""


def record_task(record: dict) -> str | None:
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    return normalize_task_type(meta.get("task_type"))


def record_classes(records: Sequence[dict]) -> list[str | None]:
    """The class each record of one dataset is balanced by (its task type's
    :meth:`~qwenvl.flare.tasks.base.TaskType.balance_classes` over the dataset's records of that type:
    classification the answer, multi-label the rarest label), ``None`` for a record without one."""
    out: list[str | None] = [None] * len(records)
    by_task: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        task = record_task(record)
        if task is not None and _answer(record).strip():
            by_task.setdefault(task, []).append(i)
    for task, members in by_task.items():
        for i, label in zip(members, TASKS[task].balance_classes([_answer(records[i]) for i in members])):
            out[i] = label
    return out


@dataclass
class DatasetDraw:
    """One dataset's part of the mix: its records, the draws it gets and the record index of every draw."""

    name: str
    records: int
    draws: int
    indices: list[int]
    balanced: bool = False
    classes: dict[str, int] = field(default_factory=dict)  # draws per class (balanced datasets)

    def as_record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"records": self.records, "draws": self.draws, "balanced": self.balanced}
        if self.classes:
            out["classes"] = dict(sorted(self.classes.items()))
        return out


def balanced_draw(
    records: Sequence[dict], count: int, seed: int, name: str
) -> tuple[list[int], dict[str, int]]:
    """``count`` draws from one dataset, equal across the classes of each task type that has classes (see the
    module docstring); ``(indices, draws per class)``. ``ValueError`` when the dataset has no record with a
    class."""
    labels = record_classes(records)
    groups: dict[str, list[int]] = {}  # task type -> record indices
    classes: dict[str, dict[str, list[int]]] = {}  # task type with classes -> class -> record indices
    for i, (record, label) in enumerate(zip(records, labels)):
        task = record_task(record) or "unknown"
        groups.setdefault(task, []).append(i)
        if label is not None:
            classes.setdefault(task, {}).setdefault(label, []).append(i)
    if not classes:
        raise ValueError(
            f"{name}+balanced: the dataset has no record whose task type has classes (classification, "
            f"multi-label), so there is nothing to balance; drop +balanced (its task types: {', '.join(sorted(groups))})"
        )
    indices: list[int] = []
    per_class: dict[str, int] = {}
    for task, members in sorted(groups.items()):
        share = round(count * len(members) / len(records))
        if task not in classes:
            indices += seeded_draw(members, share, seed, f"{name}:{task}")
            continue
        names = sorted(classes[task])
        for k, label in enumerate(names):  # the share split as evenly as whole draws allow
            n = share // len(names) + (1 if k < share % len(names) else 0)
            drawn = seeded_draw(classes[task][label], n, seed, f"{name}:{task}:{label}")
            indices += drawn
            per_class[label if len(classes) == 1 else f"{task}: {label}"] = len(drawn)
    return indices, per_class


def plan_mixture(
    datasets: Sequence[tuple[str, Sequence[dict], float, bool]], temperature: float, seed: int
) -> list[DatasetDraw]:
    """The draws of every dataset: ``(name, records, rate, balanced)`` per dataset of the list, in order.
    ``ValueError`` naming the dataset and the fix when a dataset would get no draw at all."""
    sizes = {name: len(records) * rate for name, records, rate, _ in datasets}
    counts = temperature_counts(sizes, temperature)
    out = []
    for name, records, _rate, balanced in datasets:
        count = int(round(counts[name]))
        if count < 1:
            raise ValueError(
                f"{name} gets no draw ({counts[name]:.2f} of {len(records)} records after its %NN rate and "
                f"--mixture_temperature {temperature:g}): raise its %NN or the temperature, or leave it out"
            )
        if balanced:
            indices, classes = balanced_draw(records, count, seed, name)
        else:
            indices, classes = seeded_draw(list(range(len(records))), count, seed, name), {}
        out.append(DatasetDraw(name, len(records), len(indices), indices, balanced, classes))
    return out


def format_mixture(draws: Sequence[DatasetDraw], tokens: Mapping[str, int], temperature: float) -> str:
    """The mix as a table: per dataset its records, draws, share of the draws and of the tokens (``tokens``:
    the kept tokens per dataset), and for a balanced dataset its draws per class."""
    total_draws = sum(d.draws for d in draws) or 1
    total_tokens = sum(tokens.values()) or 1
    rows = [("dataset", "records", "draws", "draws %", "tokens %")]
    for d in draws:
        rows.append(
            (
                d.name + (" +balanced" if d.balanced else ""),
                str(d.records),
                str(d.draws),
                f"{100 * d.draws / total_draws:.1f}",
                f"{100 * tokens.get(d.name, 0) / total_tokens:.1f}",
            )
        )
    widths = [max(len(r[k]) for r in rows) for k in range(5)]
    lines = [f"Training mix (mixture temperature {temperature:g}):"]
    for r in rows:
        lines.append("  " + "  ".join([r[0].ljust(widths[0])] + [r[k].rjust(widths[k]) for k in range(1, 5)]))
    for d in draws:
        if d.classes:
            lines.append(
                f"  {d.name} draws per class: " + ", ".join(f"{k} {v}" for k, v in sorted(d.classes.items()))
            )
    return "\n".join(lines)
