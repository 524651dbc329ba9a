"""The GRPO rewards of a checkpoint on held-out records: greedy answers (free decoding, the training prompt),
each scored with the rewards GRPO trains on, averaged overall and per task type.

    python -m qwenvl.train.grpo_eval --model_path output/grpo --dataset_use flare_cmmd_val --limit 16

Run it on the starting checkpoint and on the GRPO one with the same records to see what GRPO changed
(``scripts/demo_grpo.sh`` does). Free decoding, not the task types' format constraint: the constraint would
make every answer parse and hide what the format reward measures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from qwenvl.data import load_annotations, resolve_datasets
from qwenvl.flare.jsonio import write_json_atomic
from qwenvl.flare.rewards import ANSWER, FORMAT, answer_reward, format_reward, iou_threshold_at
from qwenvl.flare.tasks import normalize_task_type
from qwenvl.flare.vocabulary import AnswerVocabulary, record_dataset, training_vocabularies
from qwenvl.train.grpo import record_prompt, record_question
from qwenvl.train.grpo_arguments import RewardArguments

# The weights a GRPO run uses unless told otherwise.
DEFAULT_WEIGHTS = {ANSWER: RewardArguments.answer_reward_weight, FORMAT: RewardArguments.format_reward_weight}


def score_answers(
    records: list[dict],
    answers: list[str],
    weights: dict[str, float] = DEFAULT_WEIGHTS,
    vocabularies: dict[str, dict[str, AnswerVocabulary]] | None = None,
) -> dict[str, Any]:
    """Mean ``reward`` (weighted answer + format), ``answer`` and ``format`` rewards over ``records`` and their
    ``answers``, overall and per task type (``by_task_type``), with the number of records (``n``). Option
    answers are scored in their dataset's vocabulary: ``vocabularies`` (a checkpoint's), else the one the
    records' own answers are written in."""
    vocabularies = {**training_vocabularies(records), **(vocabularies or {})}
    rows = []
    for record, text in zip(records, answers, strict=True):
        _, reference = record_prompt(record)
        task_type = (record.get("meta") or {}).get("task_type")
        question = record_question(record)
        vocabulary = vocabularies.get(record_dataset(record), {}).get(str(normalize_task_type(task_type)))
        a = answer_reward(
            task_type, text, reference, question, iou_threshold=iou_threshold_at(1.0), vocabulary=vocabulary
        )
        f = format_reward(task_type, text, question, vocabulary)
        rows.append((task_type, a, f, weights[ANSWER] * a + weights[FORMAT] * f))

    def mean(part: list[tuple]) -> dict[str, Any]:
        n = len(part)
        return {
            "n": n,
            "reward": round(sum(r[3] for r in part) / n, 4) if n else None,
            ANSWER: round(sum(r[1] for r in part) / n, 4) if n else None,
            FORMAT: round(sum(r[2] for r in part) / n, 4) if n else None,
        }

    groups: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        groups[row[0]].append(row)
    return {**mean(rows), "by_task_type": {k: mean(v) for k, v in sorted(groups.items())}, "weights": weights}


def evaluate_rewards(
    model_path: str,
    dataset_use: str,
    limit: int | None = None,
    max_new_tokens: int = 64,
    seed: int = 42,
    weights: dict[str, float] = DEFAULT_WEIGHTS,
) -> dict[str, Any]:
    """Greedy answers of ``model_path`` to the first ``limit`` records of each dataset of ``dataset_use``,
    scored by :func:`score_answers`."""
    from qwenvl.eval.constrained import trained_vocabularies
    from qwenvl.eval.generate import BatchGenerator, load_for_generation

    records: list[dict] = []
    for spec in resolve_datasets(dataset_use, require_labels=True):
        records.extend(load_annotations(spec, seed)[:limit])
    loaded = load_for_generation(model_path)
    generator = BatchGenerator(
        loaded.model, loaded.processor, max_new_tokens=max_new_tokens, progress=False, free_decoding=True
    )
    answers = [g.text for g in generator(records)]
    result = score_answers(records, answers, weights, trained_vocabularies(model_path))
    result.update(model_path=str(model_path), dataset_use=dataset_use, limit=limit)
    return result


def format_summary(result: dict[str, Any]) -> str:
    """The mean rewards of :func:`evaluate_rewards`'s ``result`` in a few lines: overall, then per task type."""

    def line(name: str, part: dict[str, Any]) -> str:
        if not part["n"]:
            return f"  {name:<28}    0 records"
        return (
            f"  {name:<28} {part['n']:>4} records   reward {part['reward']:.4f}   "
            f"{ANSWER} {part[ANSWER]:.4f}   {FORMAT} {part[FORMAT]:.4f}"
        )

    rows = [line(result.get("dataset_use") or "all", result)]
    if len(result["by_task_type"]) > 1:
        rows += [line(name, part) for name, part in result["by_task_type"].items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_path", required=True)
    ap.add_argument("--dataset_use", required=True, help="labelled registered sets, e.g. flare_cmmd_val")
    ap.add_argument("--limit", type=int, default=None, help="first N records of each dataset")
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--answer_reward_weight", type=float, default=DEFAULT_WEIGHTS[ANSWER])
    ap.add_argument("--format_reward_weight", type=float, default=DEFAULT_WEIGHTS[FORMAT])
    ap.add_argument("--output", type=Path, default=None, help="write the result as JSON here")
    ap.add_argument(
        "--summary", action="store_true", help="print one line per task type instead of the whole result"
    )
    a = ap.parse_args(argv)
    weights = {ANSWER: a.answer_reward_weight, FORMAT: a.format_reward_weight}
    try:
        result = evaluate_rewards(a.model_path, a.dataset_use, a.limit, a.max_new_tokens, weights=weights)
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if a.output:
        write_json_atomic(a.output, result)
    if a.summary:
        print(format_summary(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
