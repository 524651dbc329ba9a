"""The evaluation pipeline: converted records -> model answers -> challenge-format predictions -> FLARE metrics.

:func:`run_evaluation` (what ``scripts/evaluate_flare.py`` calls) resolves the datasets of one split from the
registry, loads a checkpoint with its training pixel limits, generates, and hands everything to
:func:`evaluate_records`, which needs only records and a :data:`~qwenvl.eval.generate.Generator` (tests inject
fakes). Per record, the model text is parsed for its task type with :func:`qwenvl.flare.parsing.parse_answer`;
boxes of records converted on the 0-1000 grid (``meta.box_format == "qwen1000"``) go back to pixels of the
original image (``meta.image_sizes``). Answers that do not parse are kept verbatim and counted, never dropped.

Files written into ``output_dir``:

- ``predictions.json``: the challenge input records (re-read from ``meta.source_file`` /
  ``meta.source_index`` when that file still holds the record, else rebuilt from ``meta``) with ``Answer``
  filled in, one per input record, in input order;
- ``raw_outputs.jsonl``: one line per record with the model's text, the parsed flag and the written answer;
- ``summary.json``: model, split, datasets, pixel limits, token budgets, timings, unparsable and failed counts;
- ``metrics.json`` / ``metrics.md`` / ``metrics.png``: only when the records carry answers (``val``):
  the scoring library's schema (``docs/metrics.md``) plus an ``evaluation`` block (the summary), Markdown
  tables per task type and dataset, and a bar chart of each dataset's main metric. With a comparison run, a
  side-by-side table (:func:`compare_markdown`) is appended to ``metrics.md``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qwenvl.eval.generate import (
    Generation,
    Generator,
    as_generation,
    max_new_tokens_for,
    record_task,
)
from qwenvl.eval.scoring import metrics_markdown, score_records
from qwenvl.flare.datasets import (
    BOX_TASKS,
    CLASSIFICATION,
    COUNTING,
    DETECTION,
    INSTANCE_DETECTION,
    MULTI_LABEL,
    REGRESSION,
    REPORT_GENERATION,
    SPLIT_FOLDERS,
    TASK_TYPES,
    registry_name,
    resolve_dataset_name,
)
from qwenvl.flare.jsonio import write_json_atomic
from qwenvl.flare.parsing import boxes_to_pixels, clean_text, parse_answer
from qwenvl.flare.schema import BOX_QWEN1000

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.json"
RAW_OUTPUTS = "raw_outputs.jsonl"
SUMMARY = "summary.json"
METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
METRICS_PNG = "metrics.png"
SPLITS = tuple(SPLIT_FOLDERS)  # train, val, val_hidden, test
RAW_SPLIT = {"train": "train", "val": "val", "val_hidden": "val", "test": "test"}  # raw ``Split`` values

# The metric each task type is judged by, and whether higher is better.
MAIN_METRIC: dict[str, tuple[str, bool]] = {
    CLASSIFICATION: ("balanced_accuracy", True),
    MULTI_LABEL: ("f1", True),
    DETECTION: ("f1", True),
    INSTANCE_DETECTION: ("f1", True),
    COUNTING: ("mae", False),
    REGRESSION: ("mae", False),
    REPORT_GENERATION: ("rougeL", True),
}


# ---------------------------------------------------------------------------------------------- datasets
def registry_names_for(names: Sequence[str] | None, split: str) -> list[str]:
    """Registry names of ``split`` for ``names`` (FLARE folder names such as ``BUSI-det``, training registry
    names such as ``flare_busi_det``, split names such as ``flare_busi_det_val``, custom registered names or
    JSON paths). ``None`` or empty: every registered dataset of that split, in registry order."""
    from qwenvl import data as registry

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not names:
        found = [n for n, e in registry.data_dict.items() if e.get("split") == split]
        if not found:
            raise ValueError(
                f"no converted {split!r} dataset is registered (looked in {registry.default_converted_dir()}). "
                f"Convert the split first: {registry.CONVERT_SCRIPT} --all --splits "
                f"{RAW_SPLIT[split] if split != 'val_hidden' else 'val'}"
            )
        return found
    out = []
    for name in names:
        try:
            out.append(registry_name(resolve_dataset_name(name), split))
        except KeyError:
            out.append(name)  # a split-specific or custom registry name, or a JSON path
    return list(dict.fromkeys(out))


def load_eval_records(names: Sequence[str], limit: int | None = None) -> list[dict]:
    """The records of the registered datasets ``names``, all of them (no sampling), in file order; ``limit``
    keeps the first N of each dataset. Unknown or missing datasets raise one ``ValueError`` listing all."""
    from qwenvl.data import load_annotations, resolve_datasets

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    records: list[dict] = []
    for spec in resolve_datasets(",".join(names), require_labels=False):
        recs = load_annotations(spec, seed=0)
        records.extend(recs[:limit] if limit else recs)
    return records


# ------------------------------------------------------------------------------------- challenge records
class SourceFiles:
    """Raw question files read once each: the original record behind a converted one."""

    def __init__(self) -> None:
        self._files: dict[str, list | None] = {}
        self.n_rebuilt = 0

    def _load(self, path: str) -> list | None:
        if path not in self._files:
            try:
                data = json.loads(Path(path).read_text(encoding="utf-8"))
                self._files[path] = data if isinstance(data, list) else None
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                self._files[path] = None
        return self._files[path]

    def original(self, meta: dict) -> dict | None:
        """The raw record at ``meta.source_file[meta.source_index]`` when it still has the same ImageName and
        Question, else ``None``."""
        path, index = meta.get("source_file"), meta.get("source_index")
        if not isinstance(path, str) or not isinstance(index, int):
            return None
        data = self._load(path)
        if data is None or not 0 <= index < len(data) or not isinstance(data[index], dict):
            return None
        raw = data[index]
        if raw.get("ImageName") != meta.get("image_name") or raw.get("Question") != meta.get("question"):
            return None
        return dict(raw)

    def challenge_record(self, record: dict) -> dict:
        """The challenge input record of a converted record: the original when readable, else rebuilt from
        ``meta`` (TaskType, Modality, ImageName, Question, Answer, Split)."""
        meta = record.get("meta") or {}
        raw = self.original(meta)
        if raw is not None:
            return raw
        self.n_rebuilt += 1
        return rebuild_raw_record(record)


def rebuild_raw_record(record: dict) -> dict:
    """A raw record from a converted one's ``meta`` (the raw spelling of TaskType and the free-text Modality
    are not kept by the converter: the normalised task type and the modality folder stand in). ``Answer`` is
    the converted answer, with grid boxes mapped back to pixels; ``""`` for inference inputs."""
    meta = record.get("meta") or {}
    if "image_name" not in meta or "question" not in meta:
        src = record.get("_source") or {}
        raise ValueError(
            f"{src.get('file', 'records')}: record {src.get('index', '?')} has no meta.image_name / "
            "meta.question, so its challenge record cannot be rebuilt; re-convert it with "
            "data_conversion/convert_flare_to_qwen3vl.py"
        )
    answer: Any = ""
    if meta.get("has_answer", True):
        answer = reference_answer(record)
    return {
        "TaskType": meta.get("task_type", ""),
        "Modality": meta.get("modality", ""),
        "ImageName": meta["image_name"],
        "Question": meta["question"],
        "Answer": answer,
        "Split": RAW_SPLIT.get(meta.get("split", ""), meta.get("split", "")),
    }


def reference_answer(record: dict) -> Any:
    """The converted record's answer in challenge form (grid boxes back in pixels)."""
    turns = record.get("conversations") or []
    text = turns[-1].get("value", "") if turns else ""
    task = record_task(record)
    meta = record.get("meta") or {}
    if task in BOX_TASKS and meta.get("box_format") == BOX_QWEN1000:
        value = to_pixels(parse_answer(text, task), record)
        return format_boxes(value) if value is not None else text
    return text


# ---------------------------------------------------------------------------------------------- answers
def to_pixels(value: Any, record: dict) -> Any:
    """A parsed box value on the 0-1000 grid -> pixels of the record's first original image
    (``meta.image_sizes[0]``); unchanged when the record was converted with pixel boxes."""
    meta = record.get("meta") or {}
    if value is None or meta.get("box_format") != BOX_QWEN1000:
        return value
    sizes = meta.get("image_sizes") or []
    if not sizes:
        raise ValueError(
            f"record {meta.get('image_name')!r} has grid boxes but no meta.image_sizes; re-convert it"
        )
    width, height = sizes[0]
    return boxes_to_pixels(value, int(width), int(height))


def _compact_number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def format_boxes(value: Any) -> str:
    """Boxes (a list, or an instance dict) as compact JSON, integral coordinates written as integers."""

    def compact(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: compact(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [compact(v) for v in x]
        return _compact_number(x) if isinstance(x, float) else x

    return json.dumps(compact(value), separators=(", ", ": "))


@dataclass
class Prediction:
    """One record's outcome: the model text, whether it parsed, and the challenge ``Answer`` written."""

    index: int
    dataset: str
    task_type: str | None
    text: str
    answer: Any
    parsed: bool
    n_new_tokens: int = 0
    finished: bool = True
    error: str | None = None


def challenge_answer(text: str, record: dict) -> tuple[Any, bool]:
    """``(Answer, parsed)`` for a model text: the option letter (classification), the model's list text
    (multi-label), pixel boxes as JSON (detection, instance detection), a number (counting, regression), the
    report text. Text that does not parse is written as is (cleaned of special tokens) with ``parsed=False``."""
    task = record_task(record)
    meta = record.get("meta") or {}
    if task is None:
        return clean_text(text), False
    value = parse_answer(text, task, meta.get("question"))
    if value is None:
        return clean_text(text), False
    if task == CLASSIFICATION:
        return value, True
    if task in BOX_TASKS:
        return format_boxes(to_pixels(value, record)), True
    if task in (COUNTING, REGRESSION):
        return _compact_number(value), True
    return clean_text(text), True  # multi-label and reports: the model's own wording


def _dataset_of(record: dict) -> str:
    meta = record.get("meta") or {}
    return str(meta.get("dataset") or (record.get("_source") or {}).get("dataset") or "unknown")


def make_predictions(records: Sequence[dict], generations: Sequence[Generation | str]) -> list[Prediction]:
    """Pair each record with its generation and parse it (one :class:`Prediction` per record, in order)."""
    if len(generations) != len(records):
        raise ValueError(f"the generator returned {len(generations)} outputs for {len(records)} records")
    out = []
    for i, (record, raw) in enumerate(zip(records, generations)):
        gen = as_generation(raw)
        answer, parsed = ("", False) if gen.error else challenge_answer(gen.text, record)
        out.append(
            Prediction(
                i,
                _dataset_of(record),
                record_task(record),
                gen.text,
                answer,
                parsed,
                gen.n_new_tokens,
                gen.finished,
                gen.error,
            )
        )
    return out


# ----------------------------------------------------------------------------------------------- results
@dataclass
class EvaluationResult:
    """What :func:`evaluate_records` produced (the same data as the files it wrote)."""

    output_dir: Path
    predictions: list[dict]
    outputs: list[Prediction]
    summary: dict
    metrics: dict | None = None
    comparison: str | None = None
    files: list[str] = field(default_factory=list)


def _group_key(p: Prediction, multi_task: set[str]) -> str:
    return f"{p.dataset}/{p.task_type}" if p.dataset in multi_task else p.dataset


def count_by_dataset(outputs: Sequence[Prediction]) -> dict[str, dict[str, int]]:
    """Per dataset (``dataset/task`` for datasets with several task types): records, unparsable answers,
    failed records (inputs that could not be loaded; also unparsable) and answers cut at the token budget."""
    tasks: dict[str, set] = {}
    for p in outputs:
        tasks.setdefault(p.dataset, set()).add(p.task_type)
    multi = {d for d, t in tasks.items() if len(t) > 1}
    counts: dict[str, Counter] = {}
    for p in outputs:
        c = counts.setdefault(_group_key(p, multi), Counter())
        c["n"] += 1
        c["n_unparsable"] += not p.parsed
        c["n_failed"] += p.error is not None
        c["n_truncated"] += p.error is None and not p.finished
    return {
        k: {key: c[key] for key in ("n", "n_unparsable", "n_failed", "n_truncated")}
        for k, c in counts.items()
    }


def _write_raw_outputs(path: Path, records: Sequence[dict], outputs: Sequence[Prediction]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record, p in zip(records, outputs):
            meta = record.get("meta") or {}
            line = {
                "index": p.index,
                "dataset": p.dataset,
                "task_type": p.task_type,
                "image_name": meta.get("image_name"),
                "question": meta.get("question"),
                "output": p.text,
                "parsed": p.parsed,
                "answer": p.answer,
                "n_new_tokens": p.n_new_tokens,
                "finished": p.finished,
                "error": p.error,
            }
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def _ground_truth(
    records: Sequence[dict], predictions: Sequence[dict], sources: SourceFiles
) -> list[tuple[str, dict]]:
    """``(dataset, raw record with its answer)`` for the labelled records, in input order."""
    pairs = []
    for record, pred in zip(records, predictions):
        meta = record.get("meta") or {}
        if not meta.get("has_answer", False):
            continue
        raw = sources.original(meta)
        if raw is None or raw.get("Answer") in (None, ""):
            raw = {**pred, "Answer": reference_answer(record)}
        pairs.append((_dataset_of(record), raw))
    return pairs


@dataclass
class Scored:
    """Parsed outputs, challenge-format predictions and (for labelled records) metrics of one generation."""

    outputs: list[Prediction]
    predictions: list[dict]
    metrics: dict | None
    n_labelled: int
    n_rebuilt: int


def score_generations(records: Sequence[dict], generations: Sequence[Generation | str]) -> Scored:
    """Parse each generation for its record, build the challenge predictions (original raw records with
    ``Answer`` filled in, input order) and score the labelled records with
    :func:`qwenvl.eval.scoring.score_records` against their original raw answers (``metrics`` is ``None``
    when no record carries an answer)."""
    outputs = make_predictions(records, generations)
    sources = SourceFiles()
    predictions = [
        {**sources.challenge_record(record), "Answer": p.answer} for record, p in zip(records, outputs)
    ]
    gt = _ground_truth(records, predictions, sources)
    metrics = score_records(gt, predictions) if gt else None
    return Scored(outputs, predictions, metrics, len(gt), sources.n_rebuilt)


def evaluate_records(
    records: Sequence[dict],
    generator: Generator,
    output_dir: str | os.PathLike,
    run_info: dict | None = None,
    compare_dir: str | os.PathLike | None = None,
) -> EvaluationResult:
    """Generate for ``records`` (converted records, e.g. from :func:`load_eval_records`), write the output
    files and, for labelled records, score them. ``run_info`` is merged into the summary (model, settings).
    ``compare_dir``: another evaluation's folder (or its ``metrics.json``) for a side-by-side table."""
    out_dir = Path(output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    other = load_metrics(compare_dir) if compare_dir else None  # fail before generating, not after
    t0 = time.time()
    generations = list(generator(records))
    seconds = time.time() - t0
    scored = score_generations(records, generations)
    outputs = scored.outputs
    summary = {
        **(run_info or {}),
        "n_records": len(records),
        "n_labelled": scored.n_labelled,
        "n_unparsable": sum(not p.parsed for p in outputs),
        "n_failed": sum(p.error is not None for p in outputs),
        "n_truncated": sum(p.error is None and not p.finished for p in outputs),
        "n_rebuilt_records": scored.n_rebuilt,
        "by_dataset": count_by_dataset(outputs),
        "generation_seconds": round(seconds, 2),
        "records_per_second": round(len(records) / seconds, 3) if seconds > 0 else None,
        "failures": [{"index": p.index, "dataset": p.dataset, "error": p.error} for p in outputs if p.error][
            :50
        ],
    }
    if scored.n_rebuilt:
        log.warning(
            "%d records were rebuilt from meta (their raw question file is gone or changed)", scored.n_rebuilt
        )
    write_json_atomic(out_dir / PREDICTIONS, scored.predictions)
    _write_raw_outputs(out_dir / RAW_OUTPUTS, records, outputs)
    write_json_atomic(out_dir / SUMMARY, summary)
    result = EvaluationResult(
        out_dir, scored.predictions, outputs, summary, files=[PREDICTIONS, RAW_OUTPUTS, SUMMARY]
    )
    if scored.metrics is None:
        log.warning(
            "the records carry no answers (hidden validation / test inputs): wrote %s only, no metrics",
            out_dir / PREDICTIONS,
        )
        return result
    if scored.n_labelled < len(records):
        log.warning(
            "%d of %d records carry no answer and are not scored",
            len(records) - scored.n_labelled,
            len(records),
        )
    metrics = {**scored.metrics, "evaluation": summary}
    result.metrics = metrics
    markdown = run_markdown(metrics, summary)
    if other is not None:
        result.comparison = compare_markdown(metrics, other, _label(out_dir), _label(Path(compare_dir)))
        markdown += "\n" + result.comparison
    write_json_atomic(out_dir / METRICS_JSON, metrics)
    (out_dir / METRICS_MD).write_text(markdown, encoding="utf-8")
    write_chart(metrics, out_dir / METRICS_PNG, other, _label(out_dir), _label(Path(compare_dir or ".")))
    result.files += [METRICS_JSON, METRICS_MD, METRICS_PNG]
    return result


def _label(path: Path) -> str:
    path = path.expanduser().resolve()
    return path.parent.name if path.name == METRICS_JSON else path.name


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
    p = p / METRICS_JSON if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(
            f"--compare {path}: no {METRICS_JSON} there; run evaluate_flare.py into it first"
        )
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "by_dataset" not in data:
        raise ValueError(f"{p} is not a metrics file written by evaluate_flare.py (no by_dataset)")
    return data


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _delta(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return "n/a"
    return f"{a - b:+.4f}"


def _comparison_rows(this: dict, other: dict) -> list[tuple[str, str, Any, Any]]:
    rows = []
    for section, prefix in (("by_task", "all "), ("by_dataset", "")):
        names = list(this.get(section, {})) + [
            n for n in other.get(section, {}) if n not in this.get(section, {})
        ]
        for name in names:
            a, b = this.get(section, {}).get(name, {}), other.get(section, {}).get(name, {})
            task = name if section == "by_task" else (a or b).get("task_type")
            if task not in MAIN_METRIC:
                continue
            metric, higher = MAIN_METRIC[task]
            label = f"{metric} {'(higher is better)' if higher else '(lower is better)'}"
            rows.append(
                (f"{prefix}{name}" if section == "by_task" else name, label, a.get(metric), b.get(metric))
            )
    return rows


def compare_markdown(this: dict, other: dict, this_name: str = "this", other_name: str = "other") -> str:
    """A side-by-side table of two metrics dicts: per task type (``all <task>``) and per dataset, the main
    metric of this run and the other, and the difference this - other."""
    if this_name == other_name:
        this_name, other_name = f"{this_name} (this)", f"{other_name} (other)"
    lines = [
        f"## Comparison: {this_name} vs {other_name}",
        "",
        f"| scope | metric | {this_name} | {other_name} | delta |",
        "|---|---|---|---|---|",
    ]
    for scope, metric, a, b in _comparison_rows(this, other):
        lines.append(f"| {scope} | {metric} | {_fmt(a)} | {_fmt(b)} | {_delta(a, b)} |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- chart
def _chart_values(metrics: dict) -> dict[str, tuple[str, float | None, bool]]:
    out = {}
    for name, group in metrics.get("by_dataset", {}).items():
        task = group.get("task_type")
        if task in MAIN_METRIC:
            metric, higher = MAIN_METRIC[task]
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


# ------------------------------------------------------------------------------------------------- runner
@dataclass
class EvalOptions:
    """Arguments of ``scripts/evaluate_flare.py`` (see its ``--help``)."""

    model_path: str
    output_dir: str
    datasets: list[str] | None = None
    split: str = "val"
    batch_size: int = 8
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_new_tokens: int | None = None
    limit: int | None = None
    compare: str | None = None
    dtype: str | None = None
    device: str | None = None
    attn_implementation: str | None = None
    progress: bool = True


def run_evaluation(options: EvalOptions, generator: Generator | None = None) -> EvaluationResult:
    """Resolve the datasets, load the records, load the checkpoint (unless ``generator`` is given), generate,
    write and score. Raises ``ValueError`` / ``KeyError`` for bad datasets and
    :class:`qwenvl.model.loading.ModelNotFoundError` for a model that cannot be found."""
    names = registry_names_for(options.datasets, options.split)
    records = load_eval_records(names, options.limit)
    if not records:
        raise ValueError(f"the datasets {', '.join(names)} hold no records")
    if options.compare:
        load_metrics(options.compare)  # fail before loading the model, not after generating
    info: dict[str, Any] = {
        "model_path": options.model_path,
        "split": options.split,
        "datasets": names,
        "limit": options.limit,
        "batch_size": options.batch_size,
        "max_new_tokens": {
            t: max_new_tokens_for(t, options.max_new_tokens)
            for t in TASK_TYPES
            if any(record_task(r) == t for r in records)
        },
    }
    if generator is None:
        from qwenvl.eval.generate import BatchGenerator, load_for_generation

        loaded = load_for_generation(
            options.model_path,
            options.min_pixels,
            options.max_pixels,
            options.dtype,
            options.device,
            options.attn_implementation,
        )
        info.update(pixel_limits=asdict(loaded.pixel_limits), device=loaded.device, dtype=loaded.dtype)
        generator = BatchGenerator(
            loaded.model, loaded.processor, options.batch_size, options.max_new_tokens, options.progress
        )
    return evaluate_records(records, generator, options.output_dir, info, options.compare)
