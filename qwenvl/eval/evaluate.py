"""The evaluation pipeline: converted records -> model answers -> challenge-format predictions -> FLARE metrics.

:func:`run_evaluation` (what ``scripts/evaluate_flare.py`` calls) resolves the datasets of one split from the
registry, loads a checkpoint with its training pixel limits, generates, and hands everything to
:func:`evaluate_records`, which needs only records and a :data:`~qwenvl.eval.generate.Generator` (tests inject
fakes). Per record, the model text is parsed by its task type (:mod:`qwenvl.flare.tasks`, in
:mod:`qwenvl.eval.predictions`); boxes of records converted on the 0-1000 grid (``meta.box_format == "qwen1000"``) go back to pixels of the
original image (``meta.image_sizes``). Answers that do not parse are kept verbatim and counted, never dropped.

Files written into ``output_dir``:

- ``predictions.json``: the challenge input records (re-read from ``meta.source_file`` /
  ``meta.source_index`` when that file still holds the record, else rebuilt from ``meta``) with ``Answer``
  filled in, one per input record, in input order;
- ``raw_outputs.jsonl``: one line per record with the model's text, the parsed flag and the written answer
  (option tasks: the answer vocabulary it is written in, the rule that chose it, and whether it is in it);
- ``summary.json``: model, split, datasets, pixel limits, token budgets, timings, unparsable and failed counts,
  the answer vocabulary of each option dataset (``answer_vocabulary``: the checkpoint's, else the converted
  data's, the question's or the task default, with the answers not in it);
- ``metrics.json`` / ``metrics.md`` / ``metrics.png``: only when the records carry answers (``val``):
  the scoring library's schema (``docs/metrics.md``) plus an ``evaluation`` block (the summary), Markdown
  tables per task type and dataset, and a bar chart of each dataset's main metric. The top level is the
  **headline**: the predictions scored on the organisers' record set by their rules
  (:func:`qwenvl.eval.scoring.score_organisers` on the raw tree's ``validation-public``, found from the
  records' ``meta.source_file`` or given), what their evaluation script prints for ``predictions.json``;
  ``extra`` holds the converted split as evaluated (``_withGT`` records included, every record scored), a
  separate, labelled table. With a comparison run, a side-by-side table of headline numbers
  (:func:`qwenvl.eval.report.compare_markdown`) is appended to ``metrics.md``;
- ``report.html``: always; one self-contained page to look at (:mod:`qwenvl.eval.html_report`): metric
  tables, confusion matrices, a gallery with boxes drawn, the comparison.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwenvl.eval.backends import default_batch_size
from qwenvl.eval.constrained import trained_vocabularies, with_answer_vocabulary
from qwenvl.eval.generate import Generator, max_new_tokens_for, record_task
from qwenvl.eval.html_report import DEFAULT_SAMPLES, write_html_report
from qwenvl.eval.predictions import (
    RAW_SPLIT,
    Prediction,
    answer_vocabularies,
    count_by_dataset,
    record_sources,
    score_generations,
    validation_public_of,
    write_raw_outputs,
)
from qwenvl.eval.report import compare_markdown, load_metrics, run_label, run_markdown, write_chart
from qwenvl.eval.scoring import (
    ORGANISERS_FOLDER,
    load_organisers_ground_truth,
    organisers_key,
    score_organisers,
    toolkit_record_set,
)
from qwenvl.flare.datasets import FLARE_DATASETS, registry_name, resolve_dataset_name
from qwenvl.flare.jsonio import write_json_atomic
from qwenvl.flare.raw import SPLIT_FOLDERS
from qwenvl.flare.runfiles import (
    EVAL_METRICS_JSON,
    EVAL_METRICS_MD,
    EVAL_METRICS_PNG,
    EVAL_PREDICTIONS,
    EVAL_RAW_OUTPUTS,
    EVAL_REPORT_HTML,
    EVAL_SUMMARY,
)
from qwenvl.flare.tasks import TASK_TYPES

log = logging.getLogger(__name__)

SPLITS = tuple(SPLIT_FOLDERS)  # train, val, val_hidden, test


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


def drop_leaked_val(records: Sequence[dict]) -> tuple[list[dict], dict[str, dict]]:
    """``records`` without those showing an image byte-identical to an image of their dataset's registered
    training file (``flare_<name>``; every record of a leaked image goes, so the records about one image stay
    together: :func:`qwenvl.flare.leaks.drop_leaked`), and per dataset what was dropped. A dataset without a
    converted training file is kept and reported ``{"checked": False}``."""
    from qwenvl import data as registry
    from qwenvl.flare.leaks import drop_leaked

    train: dict[str, list] = {}
    for record in records:
        dataset = (record.get("meta") or {}).get("dataset")
        entry = registry.data_dict.get(registry_name(dataset, "train")) if dataset in FLARE_DATASETS else None
        if dataset in train or entry is None or not Path(entry["annotation_path"]).is_file():
            continue
        train[dataset] = json.loads(Path(entry["annotation_path"]).read_text(encoding="utf-8"))
    kept, found = drop_leaked(records, train)
    unchecked = sorted(d for d, f in found.items() if f.get("checked") is False)
    if unchecked:
        log.warning("no converted training file for %s: their records were not checked for leaks", unchecked)
    return kept, found


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


def generation_speed(outputs: Sequence[Prediction], seconds: float, stats: Any = None) -> dict[str, Any]:
    """New tokens generated, milliseconds per new token (prefill included), and the constraint's own cost
    (``stats``: a :class:`qwenvl.eval.constrained.ConstraintStats`, when the generator keeps one)."""
    n_tokens = sum(p.n_new_tokens for p in outputs)
    out: dict[str, Any] = {
        "n_new_tokens": n_tokens,
        "ms_per_new_token": round(1000 * seconds / n_tokens, 2) if n_tokens else None,
    }
    if stats is not None and hasattr(stats, "as_dict"):
        out["constraint"] = stats.as_dict()
    return out


def _as_dirs(compare: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    if not compare:
        return []
    return [Path(compare)] if isinstance(compare, (str, os.PathLike)) else [Path(c) for c in compare]


def headline_metrics(
    records: Sequence[dict],
    predictions: Sequence[dict],
    converted: dict,
    split: str = "evaluated",
    ground_truth: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    subset: bool = False,
) -> dict:
    """The metrics an evaluation reports: the headline (:func:`~qwenvl.eval.scoring.score_organisers`: the
    challenge ``predictions`` on the organisers' record set, read from ``ground_truth`` or else the
    ``validation-public`` of the raw tree ``records`` came from) with ``converted`` (the toolkit's scores of
    the converted records, :func:`~qwenvl.eval.predictions.score_generations`) under ``extra``. Without a
    headline (no such folder, records from another split, no prediction matching it) the converted scores
    are the top level, their ``record_set.no_headline`` saying why (and a warning). ``subset``: the records
    are a chosen part of the split (``--datasets``, ``--limit``), so the ground truth without a prediction is
    expected: counted as always, logged as information rather than a warning."""
    sources = record_sources(records)
    where = ", ".join(f"{folder} {n}" for folder, n in sources.items())
    extra = toolkit_record_set(
        converted, f"the converted {split} split as evaluated ({where})", sources=sources
    )
    if ground_truth:
        given = [ground_truth] if isinstance(ground_truth, (str, os.PathLike)) else list(ground_truth)
        folders = [Path(g) for g in given]
    elif not any(folder.startswith(ORGANISERS_FOLDER) for folder in sources):
        folders = []
        reason = f"no record comes from {ORGANISERS_FOLDER}, the only folder the organisers' script scores"
    else:
        folders = validation_public_of(records)
        reason = (
            f"the raw tree's {ORGANISERS_FOLDER} was not found from the records' meta.source_file (moved or "
            f"deleted?): pass --ground_truth organized_dataset/{ORGANISERS_FOLDER}"
        )
    if folders:
        truth = load_organisers_ground_truth(folders)
        mine, others = _split_by_folder(records, predictions)
        headline = score_organisers(truth, mine, expected_missing=subset)
        if headline["n_gt"]:
            _note_other_predictions(headline, truth, others)
            return {**headline, "extra": extra}
        reason = f"no prediction matches a scored record of {', '.join(str(f) for f in folders)}"
    log.warning(
        "no headline (the organisers' record set): %s; the converted split's scores stand alone", reason
    )
    extra["record_set"]["no_headline"] = reason
    return extra


def _split_by_folder(records: Sequence[dict], predictions: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """``(predictions of the records converted from validation-public, the others)``; all are the first
    when no record names its raw folder (``meta.source_split_folder``, files converted before it existed)."""
    folders = [(r.get("meta") or {}).get("source_split_folder") for r in records]
    if not any(folders):
        return list(predictions), []
    mine = [p for f, p in zip(folders, predictions) if f == ORGANISERS_FOLDER]
    return mine, [p for f, p in zip(folders, predictions) if f != ORGANISERS_FOLDER]


def _note_other_predictions(headline: dict, truth: Any, others: Sequence[dict]) -> None:
    """Record in the headline's ``record_set`` the predictions of records from other folders (the
    ``_withGT`` ones), which the headline does not use, and warn about those sharing a key with a
    validation-public record: the organisers' script on the whole ``predictions.json`` would score that
    record with the later of them, an answer about another image."""
    keys = {organisers_key(r) for _, r in truth.records if isinstance(r, dict)}
    shared = sum(1 for p in others if organisers_key(p) in keys)
    headline["record_set"]["n_predictions_other_folders"] = len(others)
    headline["record_set"]["n_predictions_other_folders_sharing_keys"] = shared
    if shared:
        log.warning(
            "%d predictions of records from outside %s (validation-hidden _withGT) share their (ImageName, "
            "Question) with a record of it: the headline scores each %s record with its own answer, but the "
            "organisers' script given the whole %s keeps the last prediction of a key, an answer about "
            "another image; give it only the %s records' predictions",
            shared,
            ORGANISERS_FOLDER,
            ORGANISERS_FOLDER,
            EVAL_PREDICTIONS,
            ORGANISERS_FOLDER,
        )


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


def evaluate_records(
    records: Sequence[dict],
    generator: Generator,
    output_dir: str | os.PathLike,
    run_info: dict | None = None,
    compare_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    report_samples: int = DEFAULT_SAMPLES,
    ground_truth: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    subset: bool = False,
) -> EvaluationResult:
    """Generate for ``records`` (converted records, e.g. from :func:`load_eval_records`), write the output
    files and, for labelled records, score them: the headline on the organisers' record set (from
    ``ground_truth``, else the raw tree's ``validation-public``), the converted records as an extra table
    (:func:`headline_metrics`; ``subset``: ``records`` are a chosen part of the split). ``run_info`` is merged
    into the summary (model, settings).
    ``compare_dir``: another evaluation's folder (or its ``metrics.json``), or several, for a side-by-side
    table (the first one is also the other side of the chart and of ``report.html``'s comparison).
    ``report_samples``: gallery samples per dataset in ``report.html`` (0: none)."""
    out_dir = Path(output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    compare_dirs = _as_dirs(compare_dir)
    others = [load_metrics(d) for d in compare_dirs]  # fail before generating, not after
    other = others[0] if others else None
    if report_samples < 0:
        raise ValueError(f"--report_samples must be 0 or more, got {report_samples}")
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
        "answer_vocabulary": answer_vocabularies(outputs),
        "generation_seconds": round(seconds, 2),
        "records_per_second": round(len(records) / seconds, 3) if seconds > 0 else None,
        **generation_speed(outputs, seconds, getattr(generator, "stats", None)),
        "failures": [{"index": p.index, "dataset": p.dataset, "error": p.error} for p in outputs if p.error][
            :50
        ],
    }
    if scored.n_rebuilt:
        log.warning(
            "%d records were rebuilt from meta (their raw question file is gone or changed)", scored.n_rebuilt
        )
    write_json_atomic(out_dir / EVAL_PREDICTIONS, scored.predictions)
    write_raw_outputs(out_dir / EVAL_RAW_OUTPUTS, records, outputs)
    report = out_dir / EVAL_REPORT_HTML  # written last, from the same data as the other files
    write_json_atomic(out_dir / EVAL_SUMMARY, summary)
    result = EvaluationResult(
        out_dir,
        scored.predictions,
        outputs,
        summary,
        files=[EVAL_PREDICTIONS, EVAL_RAW_OUTPUTS, EVAL_SUMMARY],
    )
    if scored.metrics is None:
        log.warning(
            "the records carry no answers (hidden validation / test inputs): wrote %s only, no metrics",
            out_dir / EVAL_PREDICTIONS,
        )
        write_html_report(report, records, outputs, scored.predictions, summary, max_samples=report_samples)
        result.files.append(EVAL_REPORT_HTML)
        return result
    if scored.n_labelled < len(records):
        log.warning(
            "%d of %d records carry no answer and are not scored",
            len(records) - scored.n_labelled,
            len(records),
        )
    split = str((run_info or {}).get("split", "evaluated"))
    scores = headline_metrics(records, scored.predictions, scored.metrics, split, ground_truth, subset)
    metrics = {**scores, "evaluation": summary}
    result.metrics = metrics
    markdown = run_markdown(metrics, summary)
    if other is not None:
        labels = [run_label(d) for d in compare_dirs]
        more = list(zip(labels[1:], others[1:]))
        result.comparison = compare_markdown(metrics, other, run_label(out_dir), labels[0], more)
        markdown += "\n" + result.comparison
    write_json_atomic(out_dir / EVAL_METRICS_JSON, metrics)
    (out_dir / EVAL_METRICS_MD).write_text(markdown, encoding="utf-8")
    other_label = run_label(compare_dirs[0] if compare_dirs else Path("."))
    write_chart(metrics, out_dir / EVAL_METRICS_PNG, other, run_label(out_dir), other_label)
    result.files += [EVAL_METRICS_JSON, EVAL_METRICS_MD, EVAL_METRICS_PNG]
    names = (run_label(out_dir), other_label)
    write_html_report(
        report, records, outputs, scored.predictions, summary, metrics, other, *names, report_samples
    )
    result.files.append(EVAL_REPORT_HTML)
    return result


# ------------------------------------------------------------------------------------------------- runner
@dataclass
class EvalOptions:
    """Arguments of ``scripts/evaluate_flare.py`` (see its ``--help``)."""

    model_path: str | None  # None with a baseline
    output_dir: str
    datasets: list[str] | None = None
    split: str = "val"
    batch_size: int | None = None  # None: the backend's default (qwenvl.eval.backends.default_batch_size)
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_new_tokens: int | None = None
    limit: int | None = None
    compare: str | list[str] | None = None  # one or more evaluation folders
    dtype: str | None = None
    device: str | None = None
    attn_implementation: str | None = None
    progress: bool = True
    drop_leaked_val: bool = False
    report_samples: int = DEFAULT_SAMPLES
    free_decoding: bool = False  # no format constraint (constrained decoding is the default)
    baseline: str | None = None  # "constant": no model, the constant-answer baseline (qwenvl.eval.baseline)
    ground_truth: str | None = None  # the headline's validation-public (None: found from the records' meta)
    backend: str = "hf"  # hf (transformers generate) | vllm (qwenvl.eval.vllm_backend, its own environment)


def run_evaluation(options: EvalOptions, generator: Generator | None = None) -> EvaluationResult:
    """Resolve the datasets, load the records, load the checkpoint (unless ``generator`` is given), generate,
    write and score. Raises ``ValueError`` / ``KeyError`` for bad datasets and
    :class:`qwenvl.model.loading.ModelNotFoundError` for a model that cannot be found."""
    names = registry_names_for(options.datasets, options.split)
    records = load_eval_records(names, options.limit)
    if not records:
        raise ValueError(f"the datasets {', '.join(names)} hold no records")
    for other in _as_dirs(options.compare):
        load_metrics(other)  # fail before loading the model, not after generating
    dropped = None
    if options.drop_leaked_val:
        records, dropped = drop_leaked_val(records)
    records = with_answer_vocabulary(records, trained_vocabularies(options.model_path))
    info: dict[str, Any] = {
        "model_path": options.model_path,
        "split": options.split,
        "datasets": names,
        "limit": options.limit,
        "batch_size": options.batch_size or default_batch_size(options.backend),
        "decoding": "free" if options.free_decoding else "constrained",
        "max_new_tokens": {
            t: max_new_tokens_for(t, options.max_new_tokens)
            for t in TASK_TYPES
            if any(record_task(r) == t for r in records)
        },
    }
    if dropped is not None:
        info["dropped_leaked_val"] = dropped
    if generator is None and options.baseline is not None:
        from qwenvl.eval.baseline import BASELINES, ConstantAnswerGenerator

        if options.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {options.baseline!r}; choose one of {', '.join(BASELINES)}")
        generator = ConstantAnswerGenerator()
        info.update(
            model_path=f"{options.baseline}-answer baseline (learnt from the training split)",
            baseline=options.baseline,
            decoding="none",
            max_new_tokens={},
        )
    if generator is None:
        from qwenvl.eval.backends import load_generator_for

        loaded = load_generator_for(  # --no_progress: no bar at all, transformers' weight loading included
            options,
            attn_implementation=options.attn_implementation,
            progress=options.progress,
            free_decoding=options.free_decoding,
        )
        info.update(loaded.info(records))
        generator = loaded.generator
        info["max_new_tokens"] = generator.budgets(records)  # per dataset/task type, derived from training
    return evaluate_records(
        records,
        generator,
        options.output_dir,
        info,
        options.compare,
        options.report_samples,
        options.ground_truth,
        subset=bool(options.datasets or options.limit or options.drop_leaked_val),
    )
