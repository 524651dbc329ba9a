"""The command lines of evaluation: ``scripts/evaluate_flare.py``, ``scripts/infer.py`` and
``scripts/score_predictions.py`` (also installed as ``flare-evaluate``, ``flare-infer``, ``flare-score``).
Each parses its arguments and calls the library; exit status 2 for a usage or input error."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from qwenvl.eval.backends import HF, add_generation_flags
from qwenvl.eval.baseline import BASELINES
from qwenvl.eval.evaluate import SPLITS, EvalOptions, run_evaluation
from qwenvl.eval.html_report import DEFAULT_SAMPLES
from qwenvl.eval.scoring import score_files, scores_markdown
from qwenvl.flare.runfiles import EVAL_METRICS_MD
from qwenvl.machine import require_usable_device

EVALUATE_DOC = r"""Evaluate a checkpoint on FLARE25 data: generate, write challenge-format predictions, score, compare.

    uv run python scripts/evaluate_flare.py --model_path output/qwen3vl_flare25_starter \
        --split val --output_dir eval/finetuned [--datasets retino BUSI-det ...] [--compare eval/base]

Datasets are FLARE folder names (``BUSI-det``) or registry names (``flare_busi_det``, ``flare_busi_det_val``);
default: every converted dataset of the split. Pixel limits default to the ones the checkpoint was trained with
(its run_info.json, else its processor). Writes predictions.json, raw_outputs.jsonl and summary.json; for the
labelled ``val`` split also metrics.json, metrics.md and metrics.png; always report.html, a self-contained page
(metrics, confusion matrices, samples with boxes drawn) to open in a browser. Their headline is the organisers'
number: predictions.json scored on the records and by the rules of the organisers' evaluation script (every
record of the raw tree's validation-public; ground truth without a prediction left out and counted); the
converted split as evaluated (validation-hidden _withGT records included) is a separate extra table. See
docs/evaluation.md and docs/metrics.md.
"""

INFER_DOC = r"""Ask a checkpoint a question about one or more images and print the answer.

    uv run python scripts/infer.py --model_path output/qwen3vl_flare25_starter \
        --image lesion.png --question "Detect all breast lesions in this ultrasound image." --task_type detection

For box tasks (``--task_type detection`` / ``instance_detection``, or boxes found in the answer) the boxes are
also printed in pixels of the first image (the model answers on Qwen3-VL's 0-1000 grid; ``--box_format pixel``
for a model trained on pixel boxes). Prompt and pixel limits are the ones evaluation and training use.
"""

SCORE_DOC = r"""Score FLARE25 challenge-format predictions against raw ground truth; print Markdown tables, write JSON.

    uv run python scripts/score_predictions.py --predictions predictions.json \
        --ground_truth organized_dataset/validation-public --output metrics.json

The headline is the organisers' evaluation script's number: every record under --ground_truth (a raw root
stands for its validation-public), one per (ImageName, Question) with the last of duplicates kept,
predictions matched on that key, ground truth without a prediction left out (and counted). With
--extra_ground_truth (e.g. organized_dataset/validation-hidden, where _withGT files exist) a separate, labelled
table scores those records too. Report generation gets BLEU-4 and ROUGE-L (lexical stand-ins); the GREEN score
only with ``--green_model /local/GREEN-model-folder``. Definitions: docs/metrics.md.
"""


# ------------------------------------------------------------------------------------------ evaluate_flare
def parse_evaluate_args(argv: list[str] | None = None) -> EvalOptions:
    p = argparse.ArgumentParser(
        description=EVALUATE_DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model_path", default=None, help="checkpoint folder (checkpoint-N or a run's output_dir)"
    )
    p.add_argument(
        "--baseline",
        default=None,
        choices=BASELINES,
        help="instead of a model: 'constant' gives every record its dataset's best constant answer, learnt "
        "from the converted training split (most frequent answer; median number; most common box list)",
    )
    p.add_argument("--output_dir", required=True, help="folder for predictions, raw outputs and metrics")
    p.add_argument("--datasets", nargs="+", default=None, help="default: every registered dataset of --split")
    p.add_argument("--split", default="val", choices=SPLITS, help="val (labelled, scored), val_hidden, test")
    add_generation_flags(p)  # --backend, --batch_size, --min/max_pixels, --dtype, --device
    p.add_argument(
        "--max_new_tokens",
        type=int,
        default=None,
        help="one budget for every record (default: 1.5 x the longest training answer of the dataset's task "
        "type + 16, in bytes for constrained answers and tokens for free text, where the training split is "
        "converted; else per task: 16 classification/numbers, 64 multi-label, 256 detection and reports, "
        "2048 chromosome instances). A constrained answer whose pattern needs more gets more",
    )
    p.add_argument(
        "--free_decoding",
        action="store_true",
        help="no format constraint: by default every answer is held to its task type's pattern (an option "
        "letter, a number, a box list...), so every answer parses; this lets the model write anything",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="evaluate only the first N records of each dataset"
    )
    p.add_argument(
        "--compare",
        nargs="+",
        default=None,
        help="one or more other evaluation folders: adds a side-by-side table (with several, also unparsable "
        "answers per task type of every run)",
    )
    p.add_argument(
        "--ground_truth",
        default=None,
        help="the headline's ground truth, the raw tree's validation-public (default: found from the "
        "records' meta.source_file); the organisers' script's record set and rules (docs/metrics.md)",
    )
    p.add_argument("--attn_implementation", default=None, help="sdpa (default), flash_attention_2, eager")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--drop_leaked_val",
        action="store_true",
        help="leave out records whose images are byte-identical to an image of the dataset's converted "
        "training file (every record of such an image; counts in summary.json)",
    )
    p.add_argument(
        "--report_samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help=f"samples per dataset in report.html's gallery, worst first (default {DEFAULT_SAMPLES}; 0: none)",
    )
    a = p.parse_args(argv)
    if (a.model_path is None) == (a.baseline is None):
        p.error("give --model_path (a checkpoint to evaluate) or --baseline constant, not both")
    if a.baseline is not None and a.backend != HF:
        p.error("--baseline answers without a model: --backend does not apply")
    if a.report_samples < 0:
        p.error(f"--report_samples must be 0 or more, got {a.report_samples}")
    return EvalOptions(
        model_path=a.model_path,
        output_dir=a.output_dir,
        datasets=a.datasets,
        split=a.split,
        batch_size=a.batch_size,
        min_pixels=a.min_pixels,
        max_pixels=a.max_pixels,
        max_new_tokens=a.max_new_tokens,
        limit=a.limit,
        compare=a.compare,
        dtype=a.dtype,
        device=a.device,
        attn_implementation=a.attn_implementation,
        progress=not a.no_progress,
        free_decoding=a.free_decoding,
        report_samples=a.report_samples,
        drop_leaked_val=a.drop_leaked_val,
        baseline=a.baseline,
        backend=a.backend,
        ground_truth=a.ground_truth,
    )


def evaluate_main(argv: list[str] | None = None) -> int:
    options = parse_evaluate_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from qwenvl.model.loading import ModelNotFoundError

    if options.baseline is None:  # a model to load: not onto the CPU of a machine whose GPUs torch cannot use
        require_usable_device()
    try:
        result = run_evaluation(options)
    except (ModelNotFoundError, FileNotFoundError, ValueError, KeyError, ImportError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 2
    summary = result.summary
    print(
        f"{summary['n_records']} records, {summary['n_unparsable']} unparsable answers, "
        f"{summary['n_failed']} failed inputs, {summary['generation_seconds']} s of generation"
    )
    if result.metrics is None:
        print(
            f"split {options.split!r} carries no answers: predictions only, no metrics. "
            f"Wrote {', '.join(result.files)} to {result.output_dir}"
        )
        return 0
    print((result.output_dir / EVAL_METRICS_MD).read_text(encoding="utf-8"))
    print(f"Wrote {', '.join(result.files)} to {result.output_dir}")
    return 0


# ------------------------------------------------------------------------------------------------- infer
def parse_infer_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=INFER_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="checkpoint folder (or a locally cached hub id)")
    p.add_argument(
        "--image", action="append", required=True, help="an image file; repeat for several, in order"
    )
    p.add_argument("--question", required=True, help="the question, options included")
    p.add_argument(
        "--task_type",
        default=None,
        help="classification, multi-label classification, detection, instance_detection, counting, "
        "regression, report_generation: picks the token budget and the answer parser",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="the FLARE25 dataset the images come from (e.g. chromosome): they get the image budget the "
        "checkpoint trained that dataset with (default: that of its datasets of --task_type, else its global one)",
    )
    p.add_argument(
        "--box_format", default="qwen1000", choices=("qwen1000", "pixel"), help="how the model writes boxes"
    )
    add_generation_flags(p, batch_size=False)  # --backend, --min/max_pixels, --dtype, --device
    p.add_argument(
        "--max_new_tokens", type=int, default=None, help="default: the task's budget (256 without a task)"
    )
    p.add_argument(
        "--free_decoding",
        action="store_true",
        help="no format constraint (by default a --task_type answer is held to that task's pattern)",
    )
    return p.parse_args(argv)


def infer_main(argv: list[str] | None = None) -> int:
    args = parse_infer_args(argv)
    from qwenvl.eval.infer import format_result, infer
    from qwenvl.model.loading import ModelNotFoundError

    try:
        result = infer(
            args.model_path,
            args.image,
            args.question,
            args.task_type,
            args.box_format,
            args.max_new_tokens,
            args.min_pixels,
            args.max_pixels,
            args.dtype,
            args.device,
            free_decoding=args.free_decoding,
            dataset=args.dataset,
            backend=args.backend,
        )
    except (ModelNotFoundError, FileNotFoundError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_result(result, args.box_format))
    return 1 if result.error else 0


# --------------------------------------------------------------------------------------- score_predictions
def parse_score_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=SCORE_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, help="JSON list: the input records with Answer filled in")
    p.add_argument(
        "--ground_truth",
        required=True,
        help="the headline's ground truth: the raw tree's validation-public (or the raw root holding it), "
        "every *.json below it read as the organisers' script reads it; or one question file",
    )
    p.add_argument(
        "--extra_ground_truth",
        default=None,
        help="more labelled records to score in a separate extra table, never in the headline: a question "
        "file or a folder (validation-hidden with its _withGT files; X_withGT.json replaces X.json)",
    )
    p.add_argument("--output", default="metrics.json", help="where to write the metrics JSON")
    p.add_argument(
        "--green_model",
        default=None,
        help="local folder of a GREEN judge model (e.g. GREEN-radllama2-7b); without it no GREEN score",
    )
    return p.parse_args(argv)


def score_main(argv: list[str] | None = None) -> int:
    args = parse_score_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        metrics = score_files(args.predictions, args.ground_truth, args.green_model, args.extra_ground_truth)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(scores_markdown(metrics))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"metrics written to {out}")
    return 0
