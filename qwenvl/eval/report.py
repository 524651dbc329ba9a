"""What an evaluation shows a person: the Markdown of its metrics, a side-by-side comparison with another
evaluation (each task type's main metric, with the better side marked), and a bar chart of the main metrics."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qwenvl.eval.scoring import ORGANISERS, format_value, main_scores, scores_markdown
from qwenvl.flare.runfiles import EVAL_METRICS_JSON
from qwenvl.flare.tasks import TASKS


def run_label(path: Path) -> str:
    path = path.expanduser().resolve()
    return path.parent.name if path.name == EVAL_METRICS_JSON else path.name


# ---------------------------------------------------------------------------------------------- markdown
def run_markdown(metrics: dict, summary: dict) -> str:
    """``metrics.md``: a header with the run's settings, the headline's tables (the organisers' record set),
    the extra record set's (the converted split as evaluated), then the records and unparsable counts per
    dataset of the converted split."""
    lines = ["# Evaluation", ""]
    for key in ("model_path", "split", "pixel_budgets", "max_new_tokens", "batch_size", "device", "dtype"):
        if key in summary:
            lines.append(f"- {key}: {setting_text(key, summary[key])}")
    lines.append(
        f"- records: {summary['n_records']}; unparsable answers: {summary['n_unparsable']} (scored as wrong, "
        f"kept in predictions.json); failed inputs: {summary['n_failed']}; cut at the token budget: "
        f"{summary['n_truncated']}; generation: {summary['generation_seconds']} s"
    )
    body = "\n".join(
        "#" + line if line.startswith("#") else line for line in scores_markdown(metrics).splitlines()
    )
    counts = [
        "## Records per dataset (the converted split as evaluated)",
        "",
        "| dataset | n | n_unparsable | n_failed | n_truncated |",
        "|---|---|---|---|---|",
    ]
    for name, c in summary["by_dataset"].items():
        counts.append(f"| {name} | {c['n']} | {c['n_unparsable']} | {c['n_failed']} | {c['n_truncated']} |")
    return "\n".join(lines) + "\n\n" + body + "\n\n" + "\n".join(counts) + "\n"


def _grouped(values: dict[str, Any], unit: str, limit: int = 4) -> str:
    """``{name: value}`` as ``value unit: a, b, c and 2 more; value unit: d``, the largest value first."""
    groups: dict[Any, list[str]] = {}
    for name, value in values.items():
        groups.setdefault(value, []).append(name)
    if len(groups) == 1 and len(values) > limit:
        return f"{next(iter(groups))} {unit}: all {len(values)}"
    parts = []
    for value, names in sorted(
        groups.items(), key=lambda kv: -kv[0] if isinstance(kv[0], (int, float)) else 0
    ):
        shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
        parts.append(f"{value} {unit}: {shown}")
    return "; ".join(parts)


def setting_text(key: str, value: Any) -> str:
    """A run setting of ``summary.json`` as a person reads it: the image budgets and token budgets grouped by
    value (``<= 1296 visual tokens: chromosome; <= 16 visual tokens: retino, ...``), anything else as it is."""
    if key == "pixel_budgets" and isinstance(value, dict) and "datasets" in value:
        head = f"policy {value.get('policy')} (from {value.get('source')})"
        tokens = {
            name: budget.get("max_tokens")
            for name, budget in value["datasets"].items()
            if isinstance(budget, dict) and budget.get("max_tokens") is not None
        }
        return f"{head}; at most {_grouped(tokens, 'visual tokens per image')}" if tokens else head
    if key == "max_new_tokens" and isinstance(value, dict) and value:
        numbers = {k: v for k, v in value.items() if isinstance(v, (int, float))}
        if len(numbers) == len(value):
            return _grouped(numbers, "new tokens")
    return str(value)


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


def record_set_line(names: Sequence[str], runs: Sequence[dict]) -> str:
    """What each run's compared numbers are: its headline (records scored, ground truth left out for want of
    a prediction), or the converted split's scores where a run has no headline."""
    parts = []
    for name, run in zip(names, runs):
        rs = run.get("record_set") or {}
        if rs.get("rules") == ORGANISERS:
            parts.append(f"{name} {run.get('n_gt')} scored, {run.get('n_missing_predictions')} left out")
        elif rs.get("no_headline"):
            parts.append(f"{name}: no headline, the converted split's {run.get('n_gt')} records")
        else:
            parts.append(f"{name}: no record set named (a metrics file from before headlines)")
    return (
        "Headline numbers: each run on the organisers' record set (records scored, ground truth without a "
        "prediction left out): " + "; ".join(parts) + "."
    )


def _comparison_table(
    runs: Sequence[dict], names: Sequence[str], delta: str, scopes: set[str] | None = None
) -> list[str]:
    lines = [f"| scope | metric | {' | '.join(names)} | {delta} |", "|---|---|" + "---|" * (len(names) + 1)]
    for scope, main, higher, *values in comparison_rows(*runs):
        if scopes is not None and scope not in scopes:
            continue
        metric = f"{main} {'(higher is better)' if higher else '(lower is better)'}"
        cells = " | ".join(format_value(v) for v in values)
        lines.append(f"| {scope} | {metric} | {cells} | {_delta(values[0], values[1])} |")
    return lines


def _unparsable(group: dict) -> str:
    return f"{group['n_unparsable']}/{group['n']}" if "n_unparsable" in group and "n" in group else "n/a"


def compare_markdown(
    this: dict,
    other: dict,
    this_name: str = "this",
    other_name: str = "other",
    more: Sequence[tuple[str, dict]] = (),
) -> str:
    """A side-by-side table of two (or more) metrics dicts' headline numbers (their top level, the organisers'
    record set; a line says what each run's are): per task type (``all <task>``) and per dataset, the main
    metric of this run and the others, and the difference this - other (the first other); with ``more``
    (further ``(name, metrics)`` runs as extra columns), also a table of unparsable answers per task type of
    every run. Where a run's extra record set (the converted split) scores otherwise than its headline, the
    same table of the extra record sets follows, labelled, with the groups that differ."""
    names = [this_name, other_name, *(n for n, _ in more)]
    if len(set(names)) < len(names):
        tags = ["other"] if len(names) == 2 else [f"other {i}" for i in range(1, len(names))]
        names = [f"{names[0]} (this)", *(f"{n} ({t})" for n, t in zip(names[1:], tags))]
    runs = [this, other, *(m for _, m in more)]
    title = " vs ".join(names)
    delta = "delta" if not more else f"delta vs {names[1]}"
    lines = [f"## Comparison: {title}", "", record_set_line(names, runs), ""]
    lines += _comparison_table(runs, names, delta)
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
    extras = [run.get("extra") or {} for run in runs]
    differ = {
        scope
        for e, run in zip(extras, runs)
        if e
        for scope, score in main_scores(e).items()
        if main_scores(run).get(scope) != score
    }
    if differ:
        lines += [
            "",
            "### Extra: the converted split as evaluated (not the headline)",
            "",
            "The groups whose records or scores differ from the headline's (the others are the same):",
            "",
        ]
        lines += _comparison_table(extras, names, delta, differ)
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
