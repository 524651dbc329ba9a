"""``report.html``: one self-contained page that shows an evaluation to a person.

It opens offline (inline CSS, no script, no external font or URL; images embedded as base64 JPEG thumbnails)
and holds, in order: a header with the model, split and counts; a table of contents; the headline (the
organisers' record set and rules: what it holds, the ground truth left out for want of a prediction) with its
main metric per task type and per dataset, then the extra record set (the converted split as evaluated) in
its own labelled tables; with ``--compare``, the other run's headline numbers side by side with coloured
deltas; then per dataset its metric table (the headline's row, and the extra record set's where it differs),
a confusion matrix for single-label tasks (those scored by balanced accuracy: ground truth x prediction, with
an ``unparsable`` column), and a gallery of samples (images, question, ground truth, prediction, the sample's
own main metric). Box tasks get their boxes drawn on the first image, in
original-image pixels (ground truth solid green, prediction dashed magenta). Labelled samples come worst first
(unparsable, then by their own main metric: misclassified, largest errors, lowest F1...); answer-less splits
keep input order. Nothing here branches on task-type names: it asks the task table.

    write_html_report(out_dir / EVAL_REPORT_HTML, records, outputs, predictions, summary, metrics)
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from qwenvl.eval.predictions import Prediction, SourceFiles, ground_truth_pairs
from qwenvl.eval.report import comparison_rows, record_set_line, setting_text
from qwenvl.eval.report_images import GT_COLOUR, PRED_COLOUR, THUMB_SIDE, box_list, image_uri, thumbnail
from qwenvl.eval.scoring import ORGANISERS, format_value, main_scores, missing_text
from qwenvl.flare.images import load_rgb
from qwenvl.flare.parsing import parse_options
from qwenvl.flare.schema import images_of
from qwenvl.flare.tasks import TASKS

DEFAULT_SAMPLES = 8  # gallery samples per dataset (--report_samples)
MAX_IMAGES = 4  # images shown per sample
MAX_TEXT = 2000  # characters of a question, answer or model text shown
UNPARSABLE = "unparsable"
CONFUSION_METRIC = "balanced_accuracy"  # tasks scored by it have one label per record: a confusion matrix


# ----------------------------------------------------------------------------------------------- samples
@dataclass
class Sample:
    """One record as the report shows it: its outcome, its dataset group, and (when labelled) the ground
    truth in challenge form (pixel boxes), both sides parsed by the task, and the sample's own main metric."""

    record: dict
    output: Prediction
    group: str
    reference: Any = None
    gt: Any = None
    pred: Any = None
    score: float | None = None


def group_of(output: Prediction, groups: Sequence[str]) -> str:
    """The report group of an outcome: ``dataset/task`` for datasets with several task types (the keys of
    ``summary.by_dataset`` and ``metrics.by_dataset``), else the dataset."""
    key = f"{output.dataset}/{output.task_type}"
    return key if key in groups else output.dataset


def collect_samples(
    records: Sequence[dict], outputs: Sequence[Prediction], predictions: Sequence[dict], groups: Sequence[str]
) -> list[Sample]:
    """A :class:`Sample` per record, in input order; ground truth as scoring reads it (the original raw
    answer, else the converted one with grid boxes mapped back to pixels)."""
    truths = iter(ground_truth_pairs(records, predictions, SourceFiles()))
    samples = []
    for record, out in zip(records, outputs):
        meta = record.get("meta") or {}
        sample = Sample(record, out, group_of(out, groups))
        task = TASKS.get(out.task_type or "")
        question = meta.get("question")
        if task is not None:  # the written answer as the challenge reads it, as scoring does
            sample.pred = task.read_answer(out.answer, question)
        if meta.get("has_answer", False):
            sample.reference = next(truths)[1].get("Answer")
            if task is not None:
                sample.gt = task.parse_reference(sample.reference, question)
                if sample.gt is not None:
                    sample.score = task.metrics([sample.gt], [sample.pred]).get(task.main_metric)
        samples.append(sample)
    return samples


def worst_first(samples: Sequence[Sample]) -> list[Sample]:
    """Labelled samples first, the unparsable ones leading, then by their own main metric from worst to
    best; unlabelled samples after them in input order."""

    def rank(s: Sample) -> tuple:
        if s.gt is None:
            return (2, 0.0, s.output.index)
        if s.pred is None:
            return (0, 0.0, s.output.index)
        value = float(s.score) if isinstance(s.score, (int, float)) else 0.0
        return (1, value if TASKS[s.output.task_type].higher_is_better else -value, s.output.index)

    return sorted(samples, key=rank)


def verdict(s: Sample) -> str:
    """``unparsable``, ``good`` (a perfect score), ``bad`` (a zero score, higher-is-better tasks),
    ``partial``, or ``unscored`` (no ground truth)."""
    if s.pred is None and (s.gt is not None or s.output.task_type in TASKS):
        return UNPARSABLE
    if s.gt is None or not isinstance(s.score, (int, float)):
        return "unscored"
    if TASKS[s.output.task_type].higher_is_better:
        return "good" if s.score >= 1 else "bad" if s.score <= 0 else "partial"
    return "good" if s.score == 0 else "partial"


def confusion_counts(samples: Sequence[Sample]) -> tuple[list[str], Counter]:
    """``(labels, counts)``: the labels seen (ground truth or predicted, sorted) and the count of each
    ``(truth, prediction)`` pair; an unparsable prediction is :data:`UNPARSABLE`."""
    pairs = [(str(s.gt), UNPARSABLE if s.pred is None else str(s.pred)) for s in samples if s.gt is not None]
    labels = sorted({g for g, _ in pairs} | {p for _, p in pairs if p != UNPARSABLE})
    return labels, Counter(pairs)


# --------------------------------------------------------------------------------------------------- html
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f" ... [{len(text) - limit} more characters]"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _anchor(i: int) -> str:
    return f"ds-{i}"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
main{max-width:1320px;margin:0 auto;padding:18px 28px 60px}
h1{font-size:24px;margin:6px 0 4px}a.top{float:right;font-size:12px;font-weight:400}h2{font-size:19px;margin:34px 0 8px;padding-top:8px;border-top:2px solid #d9dce3}
h3{font-size:15px;margin:16px 0 6px}a{color:#1b5fc1;text-decoration:none}a:hover{text-decoration:underline}
.sub{color:#5a6275}.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.kpi{background:#fff;border:1px solid #dde0e6;border-radius:8px;padding:8px 14px;min-width:96px}
.kpi b{display:block;font-size:20px}.kpi span{color:#5a6275;font-size:12px}.kpi.warn b{color:#c0392b}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #dde0e6;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:9px;background:#4c8bf5;border-radius:2px;vertical-align:middle;margin-right:6px}
.better{background:#d9f5e1;color:#146c2e;font-weight:600}.worse{background:#fde0dd;color:#a12b1f;font-weight:600}
.same{color:#5a6275}nav ol{columns:3;margin:6px 0;padding-left:22px}
details{margin:4px 0}summary{cursor:pointer;color:#1b5fc1}pre{white-space:pre-wrap;word-break:break-word;margin:4px 0}
.cm td.num{min-width:34px;text-align:center}.cm th.axis{background:#fff;color:#5a6275;font-weight:400}
.legend{margin:4px 0 8px;color:#3b4254}.sw{display:inline-block;width:22px;height:0;margin:0 5px 3px 12px;
vertical-align:middle}.sw.gt{border-top:3px solid rgb%GT%}.sw.pr{border-top:3px dashed rgb%PRED%}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.card{background:#fff;border:1px solid #dde0e6;border-left:5px solid #9aa1b1;border-radius:6px;padding:8px 10px}
.card.good{border-left-color:#1e9e4a}.card.bad{border-left-color:#d63a2f}.card.partial{border-left-color:#e8a317}
.card.unparsable{border-left-color:#6b3fa0}.imgs{display:flex;gap:4px;margin-bottom:6px;align-items:flex-start}
.imgs img{min-width:0;flex:0 1 auto;max-width:100%;height:auto;border-radius:3px}.noimg{padding:14px;background:#eee;color:#a12b1f}
.field{margin:3px 0}.field b{color:#3b4254;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
.txt{max-height:110px;overflow:auto;background:#f7f8fa;border-radius:3px;padding:3px 6px;white-space:pre-wrap;
word-break:break-word}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.badge{display:inline-block;border-radius:9px;padding:0 7px;font-size:11px;color:#fff;margin-left:4px}
.badge.good{background:#1e9e4a}.badge.bad{background:#d63a2f}.badge.partial{background:#c78a0c}
.badge.unparsable{background:#6b3fa0}.badge.failed{background:#333}.badge.truncated{background:#7a808f}
.badge.unscored{background:#9aa1b1}.small{font-size:12px;color:#5a6275}
""".replace("%GT%", str(GT_COLOUR)).replace("%PRED%", str(PRED_COLOUR))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """An HTML table; ``header`` is escaped here, the cells are HTML already."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _td(value: Any, num: bool = False, extra: str = "") -> str:
    return f'<td class="{"num " if num else ""}{extra}">{esc(format_value(value))}</td>'


def _header(summary: dict, metrics: dict | None) -> str:
    model = str(summary.get("model_path", "?"))
    split = summary.get("split", "?")
    kpis = [
        ("records", summary.get("n_records"), False),
        ("labelled", summary.get("n_labelled"), False),
        ("unparsable", summary.get("n_unparsable"), bool(summary.get("n_unparsable"))),
        ("failed", summary.get("n_failed"), bool(summary.get("n_failed"))),
        ("cut at the token budget", summary.get("n_truncated"), bool(summary.get("n_truncated"))),
        ("datasets", len(summary.get("by_dataset", {})), False),
        ("generation s", summary.get("generation_seconds"), False),
        ("records / s", summary.get("records_per_second"), False),
    ]
    if metrics is not None:
        headline = is_headline(metrics)
        missing = metrics.get("n_missing_predictions")
        label = "no prediction (left out of the headline)" if headline else "missing predictions"
        kpis.append((label, missing, headline and bool(missing)))
    cards = "".join(
        f'<div class="kpi{" warn" if warn else ""}"><b>{esc(f"{v:g}" if isinstance(v, (int, float)) else v)}</b><span>{esc(k)}</span></div>'
        for k, v, warn in kpis
        if v is not None
    )
    shown = ("pixel_budgets", "max_new_tokens", "decoding", "batch_size", "device", "dtype", "limit")
    grouped = ("pixel_budgets", "max_new_tokens")  # grouped by value (report.setting_text)
    settings = "".join(
        f"<tr><th>{esc(k)}</th><td class='mono'>{esc(setting_text(k, summary[k]) if k in grouped else _as_text(summary[k]))}</td></tr>"
        for k in shown
        if summary.get(k) is not None
    )
    rest = {k: v for k, v in summary.items() if k not in ("by_dataset", "failures")}
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    if metrics is None:
        scored = "no answers in this split: not scored"
    elif is_headline(metrics):
        scored = "headline: the organisers' record set and rules"
    else:
        scored = "scored on the converted split (no headline)"
    return (
        f"<h1>FLARE25 evaluation: {esc(Path(model).name or model)}</h1>"
        f'<div class="sub">model <span class="mono">{esc(model)}</span> &middot; split <b>{esc(split)}</b> '
        f"&middot; {esc(scored)} &middot; written {esc(when)}</div><div class='kpis'>{cards}</div>"
        f"<table>{settings}</table><details><summary>all run settings (summary.json)</summary>"
        f"<pre class='mono'>{esc(json.dumps(rest, indent=1, ensure_ascii=False, default=str))}</pre></details>"
    )


def _metric_cell(value: Any, higher: bool) -> str:
    if isinstance(value, (int, float)) and higher and 0 <= value <= 1:
        return f'<td class="num"><span class="bar" style="width:{round(value * 80)}px"></span>{esc(format_value(value))}</td>'
    return _td(value, num=True)


def is_headline(metrics: dict) -> bool:
    """Whether ``metrics``' top level is the headline (the organisers' record set)."""
    return (metrics.get("record_set") or {}).get("rules") == ORGANISERS


def _main_metric_row(name: str, group: dict, task: Any, direction: bool = False) -> list[str]:
    """One row of a main-metric table: scope, n, the metric's name (with ``direction``: which way is better),
    its value and the unparsable answers."""
    metric = task.main_metric
    if direction:
        metric += f" ({'higher' if task.higher_is_better else 'lower'} is better)"
    return [
        f"<td>{esc(name)}</td>",
        _td(group.get("n"), True),
        f"<td>{esc(metric)}</td>",
        _metric_cell(group.get(task.main_metric), task.higher_is_better),
        _td(group.get("n_unparsable"), True),
    ]


def _by_task_table(metrics: dict) -> str:
    rows = [_main_metric_row(name, g, TASKS[name], True) for name, g in metrics.get("by_task", {}).items()]
    return _table(["task type", "n", "main metric", "value", "unparsable"], rows)


def _record_set_text(metrics: dict) -> str:
    """The paragraph under a record set's heading: what its records and rules are, with its counts."""
    rs = metrics.get("record_set") or {}
    if is_headline(metrics):
        roots = ", ".join(rs.get("ground_truth", []))
        missing = metrics.get("n_missing_predictions", 0)
        text = (
            f"The records and rules of the organisers' evaluation script: every record under {esc(roots)}, one "
            "per (ImageName, Question) with the last of duplicates kept, predictions matched on that key. "
            f"Scored: {esc(metrics.get('n_gt'))} records; extra predictions (ignored): "
            f"{esc(metrics.get('n_extra_predictions'))}; duplicate keys (the last kept): ground truth "
            f"{esc(rs.get('n_duplicate_gt_keys', 0))}, predictions {esc(rs.get('n_duplicate_prediction_keys', 0))}."
        )
        if missing:
            by = missing_text(rs)
            text += (
                f" <b class='worse'>Ground truth without a prediction: {esc(missing)} records: left out of these "
                f"scores as the organisers' script leaves them out; a submission without them loses them</b> "
                f"({esc(by)})."
            )
        shared = rs.get("n_predictions_other_folders_sharing_keys")
        if shared:
            text += (
                f" <b>{esc(shared)} predictions of records from other folders share their key with a record "
                "here</b>: the organisers' script given every prediction would score those records with the "
                "later answer, about another image."
            )
        return f"<p class='small'>{text}</p>"
    text = (
        "Not the organisers' record set: the toolkit's rules (every record scored, records sharing a key paired "
        f"in order, a missing prediction scored as wrong). Scored: {esc(metrics.get('n_gt'))} records; missing "
        f"predictions: {esc(metrics.get('n_missing_predictions'))}."
    )
    if rs.get("no_headline"):
        text = f"<b>No headline</b>: {esc(rs['no_headline'])}. " + text
    return f"<p class='small'>{text}</p>"


def _extra_section(metrics: dict) -> str:
    """The extra record set (the converted split as evaluated): its own heading, text and tables, or one
    sentence where it scores exactly as the headline."""
    extra = metrics.get("extra")
    if not extra:
        return ""
    title = (extra.get("record_set") or {}).get("title", "the extra record set")
    head = f"<h3 id='extra'>Extra, not the headline: {esc(title)}</h3>"
    if main_scores(extra) == main_scores(metrics):
        return head + (
            "<p class='small'>The same number of records in every group as the headline, with the same scores: "
            "the tables are not repeated.</p>"
        )
    rows = []
    same = main_scores(metrics)
    for name, g in extra.get("by_dataset", {}).items():
        task = TASKS.get(g.get("task_type", ""))
        if task is None or same.get(name) == main_scores({"by_dataset": {name: g}}).get(name):
            continue
        rows.append(_main_metric_row(name, g, task))
    return (
        head
        + _record_set_text(extra)
        + _by_task_table(extra)
        + "<p class='small'>The datasets whose records or scores differ from the headline's (the others score "
        "the same):</p>" + _table(["dataset", "n", "main metric", "value", "unparsable"], rows)
    )


def _overview(groups: list[str], summary: dict, metrics: dict | None) -> str:
    parts = ["<h2 id='overview'>Overview</h2>"]
    if metrics is not None:
        title = (
            "Headline: the organisers' record set"
            if is_headline(metrics)
            else "Scores of the converted split (no headline)"
        )
        parts += [
            f"<h3 id='headline'>{esc(title)}, by task type</h3>",
            _record_set_text(metrics),
            _by_task_table(metrics),
        ]
        parts += [f"<p class='small'>{esc(note)}</p>" for note in metrics.get("notes", [])]
    rows = []
    by_ds = (metrics or {}).get("by_dataset", {})
    for i, key in enumerate(groups):
        counts = summary.get("by_dataset", {}).get(key, {})
        g = by_ds.get(key, {})
        task = TASKS.get(g.get("task_type", ""))
        row = [f"<td><a href='#{_anchor(i)}'>{esc(key)}</a></td>", _td(counts.get("n"), True)]
        if metrics is not None:
            row += [
                _td(g.get("n"), True),
                f"<td>{esc(task.main_metric) if task else ''}</td>",
                _metric_cell(g.get(task.main_metric), task.higher_is_better) if task else "<td></td>",
            ]
        row += [_td(counts.get(c), True) for c in ("n_unparsable", "n_failed", "n_truncated")]
        rows.append(row)
    scored = "scored (headline)" if metrics is not None and is_headline(metrics) else "scored"
    header = ["dataset", "records", *([scored, "main metric", "value"] if metrics is not None else [])]
    parts += ["<h3>By dataset</h3>", _table([*header, "unparsable", "failed", "cut"], rows)]
    if metrics is not None:
        parts.append(_extra_section(metrics))
    return "".join(parts)


def _comparison(this: dict, other: dict, this_name: str, other_name: str) -> str:
    if this_name == other_name:
        this_name, other_name = f"{this_name} (this)", f"{other_name} (other)"
    rows = []
    for scope, metric, higher, a, b in comparison_rows(this, other):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            d = a - b
            cls = "same" if abs(d) < 1e-12 else "better" if (d > 0) == higher else "worse"
            delta = f'<td class="num {cls}">{d:+.4f}</td>'
        else:
            delta = _td(None, True, "same")
        rows.append([f"<td>{esc(scope)}</td>", f"<td>{esc(metric)}</td>", _td(a, True), _td(b, True), delta])
    return (
        f"<h2 id='comparison'>Comparison: {esc(this_name)} vs {esc(other_name)}</h2>"
        f"<p class='small'>{esc(record_set_line([this_name, other_name], [this, other]))} delta = this - "
        "other; green where this run is better (higher or lower, as the metric wants), red where it is "
        "worse.</p>" + _table(["scope", "main metric", this_name, other_name, "delta"], rows)
    )


def _confusion(samples: Sequence[Sample]) -> str:
    labels, counts = confusion_counts(samples)
    if not labels:
        return ""
    cols = [*labels, UNPARSABLE]
    rows = []
    for g in labels:
        total = sum(counts[(g, p)] for p in cols)
        if not total:
            continue
        cells = [f"<th>{esc(g)}</th>"]
        for p in cols:
            n = counts[(g, p)]
            tint = "30,158,74" if p == g else "214,58,47"
            alpha = 0.12 + 0.6 * n / total if n else 0
            cells.append(f'<td class="num" style="background:rgba({tint},{alpha:.2f})">{n if n else ""}</td>')
        cells.append(_td(total, True))
        rows.append(cells)
    options: dict[str, str] = {}
    for s in samples:
        for letter, text in parse_options((s.record.get("meta") or {}).get("question")).items():
            options.setdefault(letter, text)
    legend = " &middot; ".join(f"<b>{esc(k)}</b> {esc(v)}" for k, v in sorted(options.items()) if k in labels)
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    return (
        "<h3>Confusion matrix</h3><p class='small'>rows: ground truth, columns: prediction</p>"
        f"<table class='cm'><tr><th class='axis'>truth \\ predicted</th>{head}<th>total</th></tr>"
        + "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
        + f"</table><div class='small'>{legend}</div>"
    )


def _images(s: Sample, boxes: bool) -> str:
    paths = images_of(s.record)
    side = THUMB_SIDE if len(paths) == 1 else THUMB_SIDE // 2  # side by side, shrunk to the card
    out = []
    for k, path in enumerate(paths[:MAX_IMAGES]):
        try:
            image = load_rgb(path)
        except (OSError, ValueError) as exc:
            out.append(
                f"<div class='noimg'>image not available: {esc(Path(str(path)).name)} ({esc(exc)})</div>"
            )
            continue
        gt, pred = (box_list(s.gt), box_list(s.pred)) if boxes and k == 0 else ([], [])
        out.append(
            f"<img alt='{esc(Path(str(path)).name)}' src='{image_uri(thumbnail(image, side, gt, pred))}'>"
        )
    if len(paths) > MAX_IMAGES:
        out.append(f"<div class='small'>+{len(paths) - MAX_IMAGES} more images</div>")
    return f"<div class='imgs'>{''.join(out)}</div>"


def _answer(value: Any, options: dict[str, str]) -> str:
    text = _as_text(value)
    if text in options:
        text = f"{text}: {options[text]}"
    return esc(_clip(text))


def _card(s: Sample, boxes: bool) -> str:
    p, meta = s.output, s.record.get("meta") or {}
    question = str(meta.get("question") or "")
    options = parse_options(question)
    v = verdict(s)
    badges = f"<span class='badge {v}'>{esc(v)}</span>"
    if p.error:
        badges += "<span class='badge failed'>failed</span>"
    if p.error is None and not p.finished:
        badges += "<span class='badge truncated'>cut at budget</span>"
    name = meta.get("image_name")
    names = [str(n) for n in name] if isinstance(name, list) else [str(name or "")]
    mono = " mono" if boxes else ""
    parts = [
        _images(s, boxes),
        f"<div class='small'>#{p.index} &middot; {esc(', '.join(names))}{badges}</div>",
        f"<div class='field'><b>Question</b><div class='txt'>{esc(_clip(question))}</div></div>",
    ]
    if s.reference is not None:
        truth = _answer(s.reference, options)
        parts.append(f"<div class='field'><b>Ground truth</b><div class='txt{mono}'>{truth}</div></div>")
    if p.error:
        shown = esc(f"error: {p.error}")
    elif not _as_text(p.answer).strip():
        shown = "<i>(empty: the model wrote only whitespace)</i>" if p.text else "<i>(empty)</i>"
    else:
        shown = _answer(p.answer, options)
    parts.append(f"<div class='field'><b>Prediction</b><div class='txt{mono}'>{shown}</div></div>")
    if p.text and p.text.strip() != _as_text(p.answer).strip():
        parts.append(
            f"<details><summary>model text</summary><pre class='mono'>{esc(_clip(p.text))}</pre></details>"
        )
    if s.gt is not None and p.task_type in TASKS:
        parts.append(
            f"<div class='small'>{esc(TASKS[p.task_type].main_metric)} of this sample: {esc(format_value(s.score))}</div>"
        )
    return f"<div class='card {v}'>{''.join(parts)}</div>"


def _group_section(
    i: int, key: str, samples: list[Sample], summary: dict, metrics: dict | None, limit: int
) -> str:
    task = TASKS.get(samples[0].output.task_type or "") if samples else None
    counts = summary.get("by_dataset", {}).get(key, {})
    parts = [
        f"<h2 id='{_anchor(i)}'>{esc(key)} <span class='sub'>{esc(task.name if task else 'unknown task')}</span>"
        "<a class='top' href='#contents'>contents</a></h2>",
        "<div class='small'>"
        + " &middot; ".join(f"{esc(k.removeprefix('n_') or 'records')}: {esc(v)}" for k, v in counts.items())
        + "</div>",
    ]
    group = (metrics or {}).get("by_dataset", {}).get(key)
    extra = ((metrics or {}).get("extra") or {}).get("by_dataset", {}).get(key)
    if (group is not None or extra is not None) and task is not None:
        parts.append(_group_table(key, task, group, extra))
        if CONFUSION_METRIC in task.metric_columns:
            parts.append(_confusion(samples))
    if limit > 0 and samples:
        labelled = any(s.gt is not None for s in samples)
        shown = worst_first(samples)[:limit]
        order = "worst first" if labelled else "in input order"
        parts.append(f"<h3>Samples: {len(shown)} of {len(samples)}, {order}</h3>")
        boxes = bool(task and task.has_boxes)
        if boxes:
            parts.append(
                "<div class='legend'>boxes in original-image pixels:<span class='sw gt'></span>ground truth"
                "<span class='sw pr'></span>prediction</div>"
            )
        parts.append("<div class='gallery'>" + "".join(_card(s, boxes) for s in shown) + "</div>")
    return "".join(parts)


def _group_table(key: str, task: Any, group: dict | None, extra: dict | None) -> str:
    """A dataset group's metric table: the top level's row (the headline's, with ``n_left_out``, or the
    converted split's without a headline), and the extra record set's labelled row where it scores otherwise
    (or where the headline has no such group)."""
    some = group if group is not None else extra
    cols = ["n", *(c for c in task.metric_columns if c in some)]
    if extra is None or (
        group is not None
        and main_scores({"by_dataset": {key: extra}}) == main_scores({"by_dataset": {key: group}})
    ):
        missing = "n_left_out" if "n_left_out" in some else "n_missing"
        return _table(
            [*cols, "n_unparsable", missing],
            [[_td(some.get(c), True) for c in [*cols, "n_unparsable", missing]]],
        )
    rows = []
    if group is not None:
        rows.append(
            ["<td>headline</td>", *(_td(group.get(c), True) for c in [*cols, "n_unparsable", "n_left_out"])]
        )
    else:
        rows.append(
            [
                "<td>headline</td>",
                *(["<td>not in the organisers' record set</td>"] + ["<td></td>"] * (len(cols) + 1)),
            ]
        )
    rows.append(
        [
            "<td>extra: converted split</td>",
            *(_td(extra.get(c), True) for c in [*cols, "n_unparsable", "n_missing"]),
        ]
    )
    return _table(["record set", *cols, "n_unparsable", "n_left_out (headline) / n_missing (extra)"], rows)


def _failures(summary: dict) -> str:
    failures = summary.get("failures") or []
    if not failures:
        return ""
    rows = [
        [_td(f.get("index")), _td(f.get("dataset")), f"<td class='mono'>{esc(f.get('error'))}</td>"]
        for f in failures
    ]
    return "<h2 id='failures'>Failed inputs</h2>" + _table(["index", "dataset", "error"], rows)


def render_report(
    samples: Sequence[Sample],
    summary: dict,
    metrics: dict | None = None,
    other: dict | None = None,
    this_name: str = "this",
    other_name: str = "other",
    max_samples: int = DEFAULT_SAMPLES,
) -> str:
    """The whole page as a string (see the module docstring)."""
    groups = list(summary.get("by_dataset", {}))
    groups += [s.group for s in samples if s.group not in groups]
    by_group: dict[str, list[Sample]] = {g: [] for g in groups}
    for s in samples:
        by_group[s.group].append(s)
    toc = ["<li><a href='#overview'>Overview</a></li>"]
    if metrics is not None and metrics.get("extra"):
        toc.append("<li><a href='#extra'>Extra record set</a></li>")
    if metrics is not None and other is not None:
        toc.append("<li><a href='#comparison'>Comparison</a></li>")
    toc += [f"<li><a href='#{_anchor(i)}'>{esc(g)}</a></li>" for i, g in enumerate(groups)]
    if summary.get("failures"):
        toc.append("<li><a href='#failures'>Failed inputs</a></li>")
    body = [
        _header(summary, metrics),
        "<nav id='contents'><h3>Contents</h3><ol>" + "".join(toc) + "</ol></nav>",
    ]
    body.append(_overview(groups, summary, metrics))
    if metrics is not None and other is not None:
        body.append(_comparison(metrics, other, this_name, other_name))
    body += [_group_section(i, g, by_group[g], summary, metrics, max_samples) for i, g in enumerate(groups)]
    body.append(_failures(summary))
    title = (
        f"FLARE25 evaluation: {Path(str(summary.get('model_path', ''))).name} ({summary.get('split', '')})"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )


def write_html_report(
    path: str | os.PathLike,
    records: Sequence[dict],
    outputs: Sequence[Prediction],
    predictions: Sequence[dict],
    summary: dict,
    metrics: dict | None = None,
    other: dict | None = None,
    this_name: str = "this",
    other_name: str = "other",
    max_samples: int = DEFAULT_SAMPLES,
) -> Path:
    """Write ``report.html`` for one evaluation (what :func:`qwenvl.eval.evaluate.evaluate_records` has:
    the converted records, their outcomes, the challenge predictions, the summary, the metrics when
    labelled, and the other run's metrics with ``--compare``). ``max_samples``: gallery samples per
    dataset (0: no gallery)."""
    if max_samples < 0:
        raise ValueError(f"report samples must be 0 or more, got {max_samples}")
    samples = collect_samples(records, outputs, predictions, list(summary.get("by_dataset", {})))
    page = render_report(samples, summary, metrics, other, this_name, other_name, max_samples)
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out
