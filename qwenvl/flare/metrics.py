"""FLARE25 metrics as pure functions on already-parsed values (see ``qwenvl.flare.tasks``).

A prediction of ``None`` means *unparsable or missing*: it is always wrong (classification), contributes no
labels / boxes (F1 metrics), or is handled by the caller (MAE). Every ratio is in [0, 1]. Definitions and
conventions are in ``docs/metrics.md``.

``green_scores`` at the bottom is the only function that loads a model; it is optional, runs only when the
user passes a local GREEN model path, and is UNTESTED (no model is available to the project's tests).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

Box = Sequence[float]


def _check_lengths(gt: Sequence[Any], pred: Sequence[Any]) -> None:
    if len(gt) != len(pred):
        raise ValueError(f"ground truth has {len(gt)} items but predictions have {len(pred)}")
    if not gt:
        raise ValueError("cannot compute a metric on zero items")


# ---------------------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------------------


def balanced_accuracy(gt: Sequence[Hashable], pred: Sequence[Hashable | None]) -> float:
    """Mean per-class recall over the classes present in ``gt``.

    A class never predicted still counts (recall 0); a ``None`` prediction matches no class; predicted
    classes absent from ``gt`` only lower the recall of the class they were wrongly given to."""
    _check_lengths(gt, pred)
    recalls = []
    for cls in sorted(set(gt), key=str):
        idx = [i for i, g in enumerate(gt) if g == cls]
        recalls.append(sum(1 for i in idx if pred[i] == cls) / len(idx))
    return sum(recalls) / len(recalls)


def accuracy(gt: Sequence[Hashable], pred: Sequence[Hashable | None]) -> float:
    """Share of exact matches (reported next to balanced accuracy for context)."""
    _check_lengths(gt, pred)
    return sum(1 for g, p in zip(gt, pred) if p is not None and g == p) / len(gt)


# ---------------------------------------------------------------------------------------------------------
# F1 from pooled counts
# ---------------------------------------------------------------------------------------------------------


def prf_from_counts(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    """``{"f1", "precision", "recall", "tp", "fp", "fn"}`` from pooled counts.

    With nothing to find and nothing predicted (tp = fp = fn = 0) all three scores are 1.0; otherwise a
    zero denominator gives 0.0 (no predictions: precision 0; nothing to find: recall 0)."""
    if tp + fp + fn == 0:
        return {"f1": 1.0, "precision": 1.0, "recall": 1.0, "tp": 0, "fp": 0, "fn": 0}
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn)
    return {"f1": f1, "precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}


def multilabel_micro_f1(
    gt_sets: Sequence[set[str] | frozenset[str]], pred_sets: Sequence[set[str] | frozenset[str] | None]
) -> dict[str, float | int]:
    """Micro F1 over labels pooled across records: TP = labels in both, FP = predicted only, FN = ground
    truth only. A ``None`` prediction is an empty set. Returns ``prf_from_counts``'s dict."""
    _check_lengths(gt_sets, pred_sets)
    tp = fp = fn = 0
    for gt, pred in zip(gt_sets, pred_sets):
        gt, pred = set(gt), set(pred or ())
        tp += len(gt & pred)
        fp += len(pred - gt)
        fn += len(gt - pred)
    return prf_from_counts(tp, fp, fn)


# ---------------------------------------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------------------------------------


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (continuous coordinates, so a box from 0 to
    10 is 10 wide). Degenerate or inverted boxes have zero area; two zero-area boxes have IoU 0."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
    area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def match_boxes(
    gt: Sequence[Box], pred: Sequence[Box], thr: float = 0.5, strict: bool = True
) -> tuple[int, int, int]:
    """Greedy one-to-one matching; returns ``(tp, fp, fn)``.

    Ground-truth boxes are taken in order; each is paired with the unmatched predicted box of highest IoU
    (the earliest on a tie), and the pair counts as a match when IoU > ``thr`` (``strict``) or IoU >= ``thr``
    (not ``strict``). Unmatched ground truth = FN, unmatched predictions = FP."""
    used = [False] * len(pred)
    tp = 0
    for g in gt:
        best, best_iou = -1, -1.0
        for j, p in enumerate(pred):
            if not used[j]:
                v = iou(g, p)
                if v > best_iou:
                    best, best_iou = j, v
        if best >= 0 and (best_iou > thr if strict else best_iou >= thr):
            used[best] = True
            tp += 1
    return tp, len(pred) - tp, len(gt) - tp


def detection_f1(
    gt_boxes: Sequence[Sequence[Box]], pred_boxes: Sequence[Sequence[Box] | None], thr: float = 0.5
) -> dict[str, float | int]:
    """FLARE detection F1: ``match_boxes`` per record with IoU > ``thr`` (strict), TP/FP/FN pooled over all
    records (every box of multi-box answers counts). A ``None`` prediction has no boxes."""
    _check_lengths(gt_boxes, pred_boxes)
    tp = fp = fn = 0
    for gt, pred in zip(gt_boxes, pred_boxes):
        t, f, n = match_boxes(gt, pred or [], thr, strict=True)
        tp, fp, fn = tp + t, fp + f, fn + n
    return prf_from_counts(tp, fp, fn)


def instance_detection_f1(
    gt: Sequence[Mapping[str, Sequence[Box]]],
    pred: Sequence[Mapping[str, Sequence[Box]] | None],
    thr: float = 0.5,
) -> dict[str, float | int]:
    """FLARE instance-detection F1: for each instance id, ``match_boxes`` between that id's ground-truth and
    predicted boxes with IoU >= ``thr`` (not strict); ids only in the ground truth are all FN, ids only in
    the prediction all FP; counts pooled over ids and records. Ids compare as stripped strings."""
    _check_lengths(gt, pred)
    tp = fp = fn = 0
    for g, p in zip(gt, pred):
        g_ids = {str(k).strip(): v for k, v in g.items()}
        p_ids = {str(k).strip(): v for k, v in (p or {}).items()}
        for key in g_ids.keys() | p_ids.keys():
            t, f, n = match_boxes(g_ids.get(key, []), p_ids.get(key, []), thr, strict=False)
            tp, fp, fn = tp + t, fp + f, fn + n
    return prf_from_counts(tp, fp, fn)


# ---------------------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------------------


def mae(gt: Sequence[float], pred: Sequence[float]) -> float:
    """Mean absolute error."""
    _check_lengths(gt, pred)
    return sum(abs(float(g) - float(p)) for g, p in zip(gt, pred)) / len(gt)


def mae_metrics(gt: Sequence[float], pred: Sequence[float | None]) -> dict[str, float | None]:
    """Counting / regression: ``mae`` over the predictions that parse (``None`` when none does),
    ``mae_penalized`` with unparsable predictions counted as 0, and the ``unparsable_share``."""
    _check_lengths(gt, pred)
    ok = [(g, p) for g, p in zip(gt, pred) if p is not None]
    return {
        "mae": mae([g for g, _ in ok], [p for _, p in ok]) if ok else None,
        "mae_penalized": mae(gt, [0.0 if p is None else p for p in pred]),
        "unparsable_share": (len(gt) - len(ok)) / len(gt),
    }


# ---------------------------------------------------------------------------------------------------------
# Reports: lexical stand-ins (NOT the challenge's GREEN score)
# ---------------------------------------------------------------------------------------------------------


def bleu4(references: Sequence[str], hypotheses: Sequence[str | None]) -> float:
    """Corpus BLEU-4 (sacrebleu defaults: 13a tokenisation, exponential smoothing off) scaled to [0, 1].
    A lexical stand-in for report quality; ``None`` hypotheses count as empty reports."""
    import sacrebleu

    _check_lengths(references, hypotheses)
    hyps = [h or "" for h in hypotheses]
    return sacrebleu.corpus_bleu(hyps, [list(references)]).score / 100.0


def rouge_l(references: Sequence[str], hypotheses: Sequence[str | None]) -> float:
    """Mean ROUGE-L F-measure per report (rouge-score, Porter stemming on). A lexical stand-in; ``None``
    hypotheses score 0."""
    from rouge_score import rouge_scorer

    _check_lengths(references, hypotheses)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(r, h or "")["rougeL"].fmeasure for r, h in zip(references, hypotheses)]
    return sum(scores) / len(scores)


# ---------------------------------------------------------------------------------------------------------
# GREEN (optional, needs a local GREEN model; UNTESTED)
# ---------------------------------------------------------------------------------------------------------

_GREEN_PROMPT = """Objective: Evaluate the accuracy of a candidate radiology report in comparison to a \
reference radiology report composed by expert radiologists.

Judge each candidate report by counting its clinically significant and its clinically insignificant errors, \
in these categories:
(a) False report of a finding in the candidate.
(b) Missing a finding present in the reference.
(c) Misidentification of a finding's anatomic location/position.
(d) Misassessment of the severity of a finding.
(e) Mentioning a comparison that isn't in the reference.
(f) Omitting a comparison detailing a change from a prior study.
Focus on clinical findings, not on writing style.

Reference Report:
{reference}

Candidate Report:
{candidate}

Answer in exactly this format, even if there are no errors:
[Explanation]:
<Explanation>

[Clinically Significant Errors]:
(a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>
....
(f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>

[Clinically Insignificant Errors]:
(a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>
....
(f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>

[Matched Findings]:
<The number of matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>
"""


def _green_section(response: str, header: str) -> str | None:
    """The text of a ``[header]:`` section up to the next blank line, or ``None`` when absent."""
    m = re.search(rf"\[{re.escape(header)}\]:\s*(.*?)(?:\n\s*\n|\Z)", response, re.DOTALL)
    return m.group(1) if m else None


def parse_green_response(response: str) -> float | None:
    """GREEN score of one judge response: matched / (matched + clinically significant errors (a)-(f)).

    ``None`` when the response lacks the significant-errors or matched-findings section; 0.0 when no finding
    matched. (Pure function, tested on hand-written responses.)"""
    significant = _green_section(response, "Clinically Significant Errors")
    matched_text = _green_section(response, "Matched Findings")
    if significant is None or matched_text is None:
        return None
    m = re.match(r"\s*(\d+)\s*\.", matched_text)
    matched = int(m.group(1)) if m else 0
    if matched == 0:
        return 0.0
    errors = 0
    if not significant.lstrip().startswith("No"):
        for letter in "abcdef":
            m = re.search(rf"^\s*\({letter}\)[^:\n]*:\s*(\d+)\s*\.", significant, re.MULTILINE)
            errors += int(m.group(1)) if m else 0
    return matched / (matched + errors)


def green_scores(
    references: Sequence[str],
    hypotheses: Sequence[str | None],
    model_path: str,
    batch_size: int = 4,
    max_new_tokens: int = 1024,
) -> list[float | None]:
    """UNTESTED. The GREEN score with a locally stored GREEN judge (e.g. a download of
    ``StanfordAIMI/GREEN-radllama2-7b``), loaded with transformers from ``model_path`` only (no hub access).

    Returns one score per report (``parse_green_response``; ``None`` where the judge's answer has no score).
    For official challenge numbers prefer the organisers' ``green_score`` package; this function follows
    the published GREEN prompt structure and scoring rule but has not been run against the real model."""
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"GREEN model folder not found: {model_path} (pass a local model folder)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, dtype=dtype).to(device)
    model.eval()

    def render(ref: str, hyp: str) -> str:
        prompt = _GREEN_PROMPT.format(reference=ref, candidate=hyp)
        if tokenizer.chat_template:
            # Carry both message schemas: GREEN's template reads from/value, standard ones role/content.
            msg = {"from": "human", "value": prompt, "role": "user", "content": prompt}
            return tokenizer.apply_chat_template([msg], tokenize=False, add_generation_prompt=True)
        return prompt

    scores: list[float | None] = []
    pairs = [render(r, h or "") for r, h in zip(references, hypotheses)]
    for start in range(0, len(pairs), batch_size):
        batch = tokenizer(pairs[start : start + batch_size], return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        scores.extend(parse_green_response(t) for t in texts)
    return scores
