"""Scoring end to end on small hand-written raw FLARE files."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from qwenvl.eval.scoring import (
    load_ground_truth,
    load_predictions,
    metrics_markdown,
    record_key,
    score_records,
)

REPO = Path(__file__).resolve().parents[1]

BM_Q = "Question: What does this smear show? Options: A: Normal B: Myelofibrosis C: Leukemia"
NJ_Q = "Does the infant have jaundice? A. No, B. Yes"
DET_Q = "Locate the breast lesions. Answer with boxes [x1, y1, x2, y2]."
NJ_IMAGES = ["imagesVal/n1_a.jpg", "imagesVal/n1_b.jpg", "imagesVal/n1_c.jpg"]
NJ2_IMAGES = ["imagesVal/n2_a.jpg", "imagesVal/n2_b.jpg", "imagesVal/n2_c.jpg"]


def raw(task: str, image, question: str, answer, modality: str = "x") -> dict:
    return {
        "TaskType": task,
        "Modality": modality,
        "ImageName": image,
        "Question": question,
        "Answer": answer,
        "Split": "val",
    }


BONE_MARROW = [
    raw("Classification", "imagesVal/bm1.jpg", BM_Q, "A"),
    raw("Classification", "imagesVal/bm2.jpg", BM_Q, "B"),
    raw("Classification", "imagesVal/bm3.jpg", BM_Q, "B"),
    raw("Classification", "imagesVal/bm4.jpg", BM_Q, "C"),
]
NEOJAUNDICE = [
    raw("classification", NJ_IMAGES, NJ_Q, "B"),
    raw("classification", NJ2_IMAGES, NJ_Q, "A"),
]
BUSI_DET = [
    raw("Detection", "imagesVal/d1.png", DET_Q, "[[0, 0, 10, 10], [20, 20, 30, 30]]"),
    raw("Detection", "imagesVal/d2.png", DET_Q, "[[0, 0, 10, 10]]"),
]


def answered(record: dict, answer) -> dict:
    return {**record, "Answer": answer}


PREDICTIONS = [
    answered(BONE_MARROW[0], "A"),
    answered(BONE_MARROW[1], "The answer is B."),  # the challenge compares the string: wrong
    # BONE_MARROW[2] has no prediction
    answered(BONE_MARROW[3], "Myelofibrosis"),  # an option text against a letter: wrong, and a finding
    answered(NEOJAUNDICE[0], "B"),
    answered(NEOJAUNDICE[1], "I cannot tell."),  # unparsable
    answered(BUSI_DET[0], "[[0,0,10,8],[20,20,30,30],[50,50,60,60]]"),  # TP 2, FP 1
    answered(BUSI_DET[1], "No lesion found."),  # unparsable -> FN 1
    raw("Detection", "imagesVal/zzz.png", DET_Q, "[[1, 2, 3, 4]]"),  # extra
]


def write(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture
def gt_tree(tmp_path: Path) -> Path:
    root = tmp_path / "validation-public"
    write(root / "Microscopy/bone_marrow/bone_marrow_questions_val.json", BONE_MARROW)
    write(root / "Clinical/neojaundice/neojaundice_questions_val.json", NEOJAUNDICE)
    write(root / "Ultrasound/BUSI-det/BUSI-det_questions_val.json", BUSI_DET)
    # an inference input (all answers empty) and a non-question JSON: both skipped
    write(
        root / "Endoscopy/endo/endo_questions_val.json", [raw("classification", "imagesVal/e.jpg", NJ_Q, "")]
    )
    write(root / "conversion_report.json", [{"reason": "missing_image"}])
    return root


def check_tree_metrics(m: dict) -> None:
    assert m["n_gt"] == 8
    assert m["n_matched"] == 7
    assert m["n_missing_predictions"] == 1
    assert m["n_extra_predictions"] == 1
    assert m["n_reused_predictions"] == 0
    assert m["n_gt_skipped"] == 0
    assert m["notes"] == [
        "bone_marrow (classification): 1 of 3 answers are option texts where the reference uses option "
        "letters; the challenge compares the texts, so they score 0 however right they are: answer in the "
        "dataset's vocabulary"
    ]
    assert m["vocabulary_findings"][0] == {
        "dataset": "bone_marrow",
        "task_type": "classification",
        "n": 3,
        "references": {"letters": 3},
        "answers": {"letters": 1, "None": 1, "texts": 1},
        "n_other_vocabulary": 1,
        "note": m["notes"][0],
    }
    assert m["vocabulary_findings"][1]["n_other_vocabulary"] == 0  # neojaundice

    cls = m["by_task"]["classification"]
    # gt A B B C | B A ; pred A "the answer is b." - myelofibrosis | B - : recall A 1/2, B 1/3, C 0/1
    assert cls["n"] == 6
    assert cls["balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    assert cls["accuracy"] == pytest.approx(2 / 6)
    assert (cls["n_unparsable"], cls["n_missing"]) == (2, 1)

    bm = m["by_dataset"]["bone_marrow"]
    assert bm["task_type"] == "classification"
    assert bm["n"] == 4
    assert bm["balanced_accuracy"] == pytest.approx((1 + 0 + 0) / 3)
    assert (bm["n_unparsable"], bm["n_missing"]) == (1, 1)

    nj = m["by_dataset"]["neojaundice"]
    assert nj["balanced_accuracy"] == pytest.approx(0.5)
    assert (nj["n"], nj["n_unparsable"], nj["n_missing"]) == (2, 1, 0)

    det = m["by_task"]["detection"]
    assert (det["tp"], det["fp"], det["fn"]) == (2, 1, 1)
    assert det["f1"] == pytest.approx(2 / 3)
    assert det["n_unparsable"] == 1
    assert m["by_dataset"]["BUSI-det"]["f1"] == pytest.approx(2 / 3)
    assert set(m["by_dataset"]) == {"bone_marrow", "neojaundice", "BUSI-det"}


def test_load_ground_truth_tree(gt_tree: Path, caplog):
    with caplog.at_level(logging.WARNING):
        gt = load_ground_truth(gt_tree)
    # files in path order: Clinical/, Endoscopy/ (skipped), Microscopy/, Ultrasound/
    assert [d for d, _ in gt] == ["neojaundice"] * 2 + ["bone_marrow"] * 4 + ["BUSI-det"] * 2
    assert gt[0][1]["ImageName"] == NJ_IMAGES
    assert len(gt) == 8
    assert "every Answer is empty" in caplog.text
    assert "not a raw FLARE question file" in caplog.text


def test_score_tree_end_to_end(gt_tree: Path):
    check_tree_metrics(score_records(load_ground_truth(gt_tree), PREDICTIONS))


def test_score_single_file(tmp_path: Path):
    path = write(tmp_path / "anywhere/BUSI-det_questions_val.json", BUSI_DET)
    gt = load_ground_truth(path)
    assert [d for d, _ in gt] == ["BUSI-det", "BUSI-det"]
    m = score_records(gt, PREDICTIONS)
    assert list(m["by_dataset"]) == ["BUSI-det"]
    assert m["by_task"]["detection"]["f1"] == pytest.approx(2 / 3)
    # every prediction that is not a BUSI-det record is extra: 8 - 2
    assert (m["n_matched"], m["n_missing_predictions"], m["n_extra_predictions"]) == (2, 0, 6)


def test_with_gt_file_preferred_and_dataset_name_with_underscore(tmp_path: Path):
    folder = tmp_path / "validation-hidden/Microscopy/bone_marrow"
    write(folder / "bone_marrow_questions_val.json", [answered(r, "") for r in BONE_MARROW])
    write(folder / "bone_marrow_questions_val_withGT.json", BONE_MARROW)
    gt = load_ground_truth(tmp_path)
    assert len(gt) == 4 and {d for d, _ in gt} == {"bone_marrow"}
    single = load_ground_truth(folder / "bone_marrow_questions_val_withGT.json")
    assert {d for d, _ in single} == {"bone_marrow"}


def test_answerless_input_is_a_clear_error(tmp_path: Path):
    path = write(tmp_path / "BUSI-det_questions_test.json", [answered(r, "") for r in BUSI_DET])
    with pytest.raises(ValueError, match="no answered ground-truth records"):
        load_ground_truth(path)
    with pytest.raises(FileNotFoundError, match="ground truth not found"):
        load_ground_truth(tmp_path / "nope")


def test_bad_ground_truth_record_names_file_and_index(tmp_path: Path):
    bad = [BUSI_DET[0], {"TaskType": "detection", "ImageName": "x.png", "Answer": "[[1,2,3,4]]"}]
    path = write(tmp_path / "t/BUSI-det/BUSI-det_questions_val.json", bad)
    with pytest.raises(ValueError, match=r"BUSI-det_questions_val.json: record 1 lacks Question"):
        load_ground_truth(tmp_path / "t")
    with pytest.raises(ValueError, match=r"record 1 lacks Question; every ground-truth record needs"):
        load_ground_truth(path)


def test_bad_prediction_record_is_a_clear_error(tmp_path: Path):
    path = write(tmp_path / "preds.json", [{"Answer": "A"}])
    with pytest.raises(ValueError, match="preds.json: record 0 has no ImageName/Question"):
        load_predictions(path)


def test_list_image_name_key_keeps_order():
    a = raw("classification", ["x.jpg", "y.jpg"], "Q?", "A")
    b = raw("classification", ["y.jpg", "x.jpg"], "Q?", "A")
    assert record_key(a) == ('["x.jpg", "y.jpg"]', "Q?")
    assert record_key(a) != record_key(b)
    m = score_records([("endo", a)], [b])
    assert (m["n_missing_predictions"], m["n_extra_predictions"]) == (1, 1)
    assert m["by_task"]["classification"]["balanced_accuracy"] == 0.0


ML_Q = "Which findings are present? Options: A: Pleural effusion B: Nodule C: Cardiomegaly"
CHROMO_GT = '{"1": [[0, 0, 10, 10], [20, 0, 30, 10]], "2": [[0, 20, 10, 30]]}'


def other_tasks_gt() -> list[dict]:
    def rec(dataset: str, task: str, image: str, question: str, answer) -> dict:
        return {**raw(task, image, question, answer), "dataset": dataset}

    return [
        rec("neurips22cell", "Counting", "c1.png", "How many cells?", "120"),
        rec("neurips22cell", "Counting", "c2.png", "How many cells?", 200),
        rec("boneresorption", "regression", "r1.png", "Bone loss?", "35.5"),
        rec("chestdr", "Multi-label Classification", "x1.png", ML_Q, "Pleural effusion; Nodule"),
        rec("chestdr", "Multi-label Classification", "x2.png", ML_Q, "Cardiomegaly"),
        rec("chestdr", "classification", "x1.png", "Normal? A. No, B. Yes", "A"),
        rec("chromosome", "instance_detection", "k1.png", "Detect chromosomes.", CHROMO_GT),
        rec("IU_XRay", "Report_Generation", ["f.png", "l.png"], "Write the report.", "the heart is normal"),
        rec("IU_XRay", "Segmentation", "s.png", "Segment.", "mask"),  # unknown task: skipped
        rec("BUSI-det", "detection", "bad.png", "Boxes?", "see image"),  # unparsable GT: skipped
    ]


OTHER_ANSWERS = {
    "c1.png": "There are 110 cells.",
    "c2.png": "many",
    "r1.png": "30.5%",
    ("x1.png", ML_Q): "A, B",
    "x2.png": "cardiomegaly; nodule",
    ("x1.png", "Normal? A. No, B. Yes"): "No",
    "k1.png": '```json\n{"1": [[0, 0, 10, 10]], "3": [[50, 50, 60, 60]]}\n```',
    '["f.png", "l.png"]': "the heart is enlarged",
}


def other_predictions(gt: list[dict]) -> list[dict]:
    preds = []
    for r in gt:
        name = r["ImageName"] if isinstance(r["ImageName"], str) else json.dumps(r["ImageName"])
        answer = OTHER_ANSWERS.get((name, r["Question"]), OTHER_ANSWERS.get(name))
        if answer is not None:
            preds.append({k: v for k, v in {**r, "Answer": answer}.items() if k != "dataset"})
    return preds


def test_score_other_task_types(caplog):
    gt = other_tasks_gt()
    with caplog.at_level(logging.WARNING):
        m = score_records(gt, other_predictions(gt))
    assert m["n_gt_skipped"] == 2
    assert "unknown TaskType 'Segmentation'" in caplog.text
    assert "unparsable detection answer" in caplog.text

    cnt = m["by_task"]["counting"]
    # |120 - 110| = 10 over the parsable one; penalised: (10 + |200 - 0|) / 2
    assert cnt["mae"] == pytest.approx(10.0)
    assert cnt["mae_penalized"] == pytest.approx(105.0)
    assert cnt["unparsable_share"] == pytest.approx(0.5)
    assert (cnt["n"], cnt["n_unparsable"], cnt["n_missing"]) == (2, 1, 0)
    assert m["by_task"]["regression"]["mae"] == pytest.approx(5.0)

    ml = m["by_task"]["multi-label classification"]
    # x1: letters a, b against the GT names (FP 2, FN 2): the challenge compares the texts;
    # x2: cardiomegaly TP, nodule FP
    assert (ml["tp"], ml["fp"], ml["fn"]) == (1, 3, 2)
    assert ml["f1"] == pytest.approx(2 / 7)
    # chestdr has two task types: one entry per task
    assert m["by_dataset"]["chestdr/multi-label classification"]["n"] == 2
    assert m["by_dataset"]["chestdr/classification"]["balanced_accuracy"] == 0.0  # "No" is not "A"
    # ... and both are findings, the scores unchanged
    crossed = {(f["dataset"], f["task_type"]): f["n_other_vocabulary"] for f in m["vocabulary_findings"]}
    assert crossed == {("chestdr", "classification"): 1, ("chestdr", "multi-label classification"): 1}

    inst = m["by_task"]["instance_detection"]
    # id 1: TP 1, FN 1; id 2: FN 1; id 3: FP 1
    assert (inst["tp"], inst["fp"], inst["fn"]) == (1, 1, 2)
    assert inst["f1"] == pytest.approx(0.4)

    rep = m["by_task"]["report_generation"]
    assert rep["rougeL"] == pytest.approx(0.75)
    assert 0.0 <= rep["bleu4"] < 1.0
    assert "green" not in rep and all("green" not in g for g in m["by_dataset"].values())
    assert m["notes"] and "lexical stand-ins" in m["notes"][0]
    assert "chestdr (multi-label classification): 1 of 2 answers are option letters where" in m["notes"][2]


def test_green_only_through_explicit_function():
    gt = [r for r in other_tasks_gt() if r["TaskType"] == "Report_Generation"]
    second = {**gt[0], "ImageName": ["f2.png", "l2.png"], "Answer": "no acute disease"}
    calls = []

    def fake_green(refs, hyps):
        calls.append((refs, hyps))
        return [0.25, None]

    preds = other_predictions(gt) + [answered(second, "lungs are clear")]
    m = score_records(gt + [second], preds, green_fn=fake_green)
    # one call for all reports, not one per table
    assert calls == [
        (["the heart is normal", "no acute disease"], ["the heart is enlarged", "lungs are clear"])
    ]
    rep = m["by_task"]["report_generation"]
    assert (rep["green"], rep["green_n_failed"]) == (0.25, 1)
    assert m["by_dataset"]["IU_XRay"]["green"] == 0.25


def test_duplicate_keys_pair_in_order_and_reuse():
    a = raw("classification", "d.jpg", "Q? A. No, B. Yes", "A")
    gt = [("d", a), ("d", dict(a)), ("d", dict(a))]
    m = score_records(gt, [answered(a, "A"), answered(a, "B")])
    # pairs: A-A, A-B, and the third reuses the last prediction (B)
    assert m["n_reused_predictions"] == 1
    assert m["by_task"]["classification"]["accuracy"] == pytest.approx(1 / 3)
    m = score_records([("d", a)], [answered(a, "A"), answered(a, "B")])
    assert m["n_extra_predictions"] == 1
    assert m["by_task"]["classification"]["accuracy"] == 1.0


def test_metrics_markdown_tables(gt_tree: Path):
    text = metrics_markdown(score_records(load_ground_truth(gt_tree), PREDICTIONS))
    assert "missing predictions (scored as wrong): 1" in text
    assert "## classification" in text and "## detection" in text
    assert "| scope | n | balanced_accuracy | accuracy | n_unparsable | n_missing |" in text
    assert "| **all** | 6 | 0.2778 | 0.3333 | 2 | 1 |" in text
    assert "| bone_marrow | 4 | 0.3333 | 0.2500 | 1 | 1 |" in text
    assert "| BUSI-det | 2 | 0.6667 | 0.6667 | 0.6667 | 2 | 1 | 1 | 1 | 0 |" in text


def test_markdown_labels_report_stand_ins():
    gt = [r for r in other_tasks_gt() if r["TaskType"] == "Report_Generation"]
    text = metrics_markdown(score_records(gt, other_predictions(gt)))
    assert "| scope | n | bleu4 | rougeL | n_unparsable | n_missing |" in text
    assert "lexical stand-ins, not the challenge's GREEN score" in text


def _load_cli():
    spec = importlib.util.spec_from_file_location("score_predictions", REPO / "scripts/score_predictions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_json_and_prints_tables(gt_tree: Path, tmp_path: Path, capsys):
    cli = _load_cli()
    preds = write(tmp_path / "predictions.json", PREDICTIONS)
    out = tmp_path / "out/metrics.json"
    argv = ["--predictions", str(preds), "--ground_truth", str(gt_tree), "--output", str(out)]
    assert cli.main([*argv, "--extra_ground_truth", str(gt_tree)]) == 0
    printed = capsys.readouterr().out
    assert "## detection" in printed and f"metrics written to {out}" in printed
    m = json.loads(out.read_text())
    # The headline (the organisers' rules): bm2 has no prediction and is left out, not scored as wrong; the
    # endo record has no answer. Classes pooled by letter: A 1/2 (bm0 right, nj1 unparsable), B 1/2 (bm1's
    # "The answer is B." is not "b", nj0 right), C 0/1.
    assert m["record_set"]["rules"] == "organisers"
    assert (m["n_gt"], m["n_missing_predictions"], m["n_extra_predictions"], m["n_gt_skipped"]) == (
        7,
        1,
        1,
        1,
    )
    assert m["by_task"]["classification"]["balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert m["by_task"]["detection"]["f1"] == pytest.approx(2 / 3)
    assert m["record_set"]["n_no_task_type"] == 1  # conversion_report.json's item
    # The same tree as an extra record set: the toolkit's rules, as before
    check_tree_metrics(m["extra"])
    assert printed.index("# Headline:") < printed.index("# Extra:")


def test_cli_errors_cleanly(gt_tree: Path, tmp_path: Path, capsys):
    cli = _load_cli()
    preds = write(tmp_path / "predictions.json", PREDICTIONS)
    rc = cli.main(
        ["--predictions", str(preds), "--ground_truth", str(gt_tree), "--green_model", str(tmp_path / "none")]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "--green_model" in err and "not a local model folder" in err
    rc = cli.main(["--predictions", str(tmp_path / "missing.json"), "--ground_truth", str(gt_tree)])
    assert rc == 2
    assert "predictions file not found" in capsys.readouterr().err
