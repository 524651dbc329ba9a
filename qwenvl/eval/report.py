"""What an evaluation shows a person: the Markdown of its metrics, a side-by-side comparison with another
evaluation (each task type's main metric, with the better side marked), and a bar chart of the main metrics."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qwenvl.eval.scoring import format_value, metrics_markdown
from qwenvl.flare.runfiles import EVAL_METRICS_JSON
from qwenvl.flare.tasks import TASKS


def run_label(path: Path) -> str:
    path = path.expanduser().resolve()
    return path.parent.name if path.name == EVAL_METRICS_JSON else path.name


# ---------------------------------------------------------------------------------------------- markdown
def run_markdown(metrics: dict, summary: dict) -> str:
    """``metrics.md``: a header with the run's settings, the scoring tables, and the unparsable counts."""
    lines = ["# Evaluation", ""]
    for key in ("model_path", "split", "pixel_limits", "max_new_tokens", "batch_size", "device", "dtype"):
        if key in summary:
            lines.append(f"- {key}: {summary[key]}")
    lines.append(
        f"- records: {summary['n_records']}; unparsable answers: {summary['n_unparsable']} (scored as wrong, "
        f"kept in predictions.json); failed inputs: {summary['n_failed']}; cut at the token budget: "
        f"{summary['n_truncated']}; generation: {summary['generation_seconds']} s"
    )
    lines += ["", "| dataset | n | n_unparsable | n_failed | n_truncated |", "|---|---|---|---|---|"]
    for name, c in summary["by_dataset"].items():
        lines.append(f"| {name} | {c['n']} | {c['n_unparsable']} | {c['n_failed']} | {c['n_truncated']} |")
    body = "\n".join(
        "#" + line if line.startswith("#") else line for line in metrics_markdown(metrics).splitlines()
    )
    return "\n".join(lines) + "\n\n" + body + "\n"


def load_metrics(path: str | os.PathLike) -> dict:
    """``metrics.json`` of an evaluation folder (or the file itself)."""
    p = Path(path).expanduser()
    p = p / EVAL_METRICS_JSON if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(
            f"--compare {path}: no {EVAL_METRICS_JSON} there; run evaluate_flare.py into it first"
        )
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "by_dataset" not in data:
        raise ValueError(f"{p} is not a metrics file written by evaluate_flare.py (no by_dataset)")
    return data


def _delta(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return "n/a"
    return f"{a - b:+.4f}"


def comparison_rows(this: dict, *others: dict) -> list[tuple[Any, ...]]:
    """``(scope, main metric, higher is better, this value, *other values)`` per task type (``all <task>``)
    and per dataset of any run."""
    rows = []
    runs = (this, *others)
    for section, prefix in (("by_task", "all "), ("by_dataset", "")):
        groups = [run.get(section, {}) for run in runs]
        for name in dict.fromkeys(n for g in groups for n in g):
            found = [g.get(name, {}) for g in groups]
            first = next(f for f in found if f)
            task = TASKS.get(name if section == "by_task" else first.get("task_type", ""))
            if task is not None:
                m = task.main_metric
                rows.append((prefix + name, m, task.higher_is_better, *(f.get(m) for f in found)))
    return rows


def _unparsable(group: dict) -> str:
    return f"{group['n_unparsable']}/{group['n']}" if "n_unparsable" in group and "n" in group else "n/a"


def compare_markdown(
    this: dict,
    other: dict,
    this_name: str = "this",
    other_name: str = "other",
    more: Sequence[tuple[str, dict]] = (),
) -> str:
    """A side-by-side table of two (or more) metrics dicts: per task type (``all <task>``) and per dataset,
    the main metric of this run and the others, and the difference this - other (the first other); with
    ``more`` (further ``(name, metrics)`` runs as extra columns), also a table of unparsable answers per task
    type of every run."""
    names = [this_name, other_name, *(n for n, _ in more)]
    if len(set(names)) < len(names):
        tags = ["other"] if len(names) == 2 else [f"other {i}" for i in range(1, len(names))]
        names = [f"{names[0]} (this)", *(f"{n} ({t})" for n, t in zip(names[1:], tags))]
    runs = [this, other, *(m for _, m in more)]
    title = " vs ".join(names)
    delta = "delta" if not more else f"delta vs {names[1]}"
    lines = [
        f"## Comparison: {title}",
        "",
        f"| scope | metric | {' | '.join(names)} | {delta} |",
        "|---|---|" + "---|" * (len(names) + 1),
    ]
    for scope, main, higher, *values in comparison_rows(*runs):
        metric = f"{main} {'(higher is better)' if higher else '(lower is better)'}"
        cells = " | ".join(format_value(v) for v in values)
        lines.append(f"| {scope} | {metric} | {cells} | {_delta(values[0], values[1])} |")
    if more:
        lines += [
            "",
            "Unparsable answers (scored as wrong) per task type:",
            "",
            f"| task type | {' | '.join(names)} |",
            "|---|" + "---|" * len(names),
        ]
        tasks = dict.fromkeys(t for run in runs for t in run.get("by_task", {}))
        for task in tasks:
            cells = " | ".join(_unparsable(run.get("by_task", {}).get(task, {})) for run in runs)
            lines.append(f"| {task} | {cells} |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- chart
def _chart_values(metrics: dict) -> dict[str, tuple[str, float | None, bool]]:
    out = {}
    for name, group in metrics.get("by_dataset", {}).items():
        task = group.get("task_type")
        if task in TASKS:
            metric, higher = TASKS[task].main_metric, TASKS[task].higher_is_better
            out[name] = (metric, group.get(metric), higher)
    return out


def write_chart(
    metrics: dict,
    path: str | os.PathLike,
    other: dict | None = None,
    this_name: str = "this",
    other_name: str = "other",
) -> None:
    """A bar chart of each dataset's main metric (matplotlib, Agg backend): one panel for the 0-1 scores
    (higher is better) and one for mean absolute errors (lower is better); with ``other``, paired bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = _chart_values(metrics)
    theirs = _chart_values(other) if other else {}
    names = list(mine) + [n for n in theirs if n not in mine]
    panels = [
        ("score (higher is better)", [n for n in names if (mine.get(n) or theirs.get(n))[2]]),
        ("MAE (lower is better)", [n for n in names if not (mine.get(n) or theirs.get(n))[2]]),
    ]
    panels = [(title, group) for title, group in panels if group]
    if not panels:
        panels = [("score", [])]
    widths = [max(2, len(group)) for _, group in panels]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(2 + 0.6 * sum(widths), 4.5),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    series = [(this_name, mine)] + ([(other_name, theirs)] if other else [])
    bar = 0.8 / len(series)
    for ax, (title, group) in zip(axes[0], panels):
        for k, (label, values) in enumerate(series):
            heights = [_nan_if_none(values.get(n, (None, None))[1]) for n in group]
            xs = [i + (k - (len(series) - 1) / 2) * bar for i in range(len(group))]
            ax.bar(xs, heights, width=bar, label=label)
            for x, h in zip(xs, heights):  # the value over each bar; "n/a" where nothing parsed
                ax.annotate(
                    "n/a" if math.isnan(h) else f"{h:.2f}",
                    (x, 0 if math.isnan(h) else h),
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    xytext=(0, 1),
                    textcoords="offset points",
                )
        ax.set_xticks(range(len(group)))
        ax.set_xticklabels(
            [f"{n}\n{(mine.get(n) or theirs.get(n))[0]}" for n in group], rotation=45, ha="right", fontsize=7
        )
        ax.set_title(title, fontsize=9)
        if title.startswith("score"):
            ax.set_ylim(0, 1.05)
        else:
            ax.set_ylim(bottom=0)
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.suptitle("FLARE25: main metric per dataset", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _nan_if_none(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else math.nan
