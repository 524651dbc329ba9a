"""The headline: predictions scored on exactly the records the organisers' evaluation script scores, by its
rules (every record under validation-public, keyed by (ImageName, Question) as its dictionary keys them, the
last of duplicates kept, ground truth without a prediction left out and counted). Each rule on a hand-built
ground-truth tree, against values computed by hand from the organisers' definitions (balanced accuracy: the
mean recall over the reference classes of the lower-cased answer strings; micro F1 over label sets; MAE), and
the headline first in metrics.md, report.html and the comparison; the toolkit's record sets in extra tables."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from qwenvl.eval.evaluate import evaluate_records
from qwenvl.eval.scoring import (
    load_ground_truth,
    load_organisers_ground_truth,
    organisers_key,
    score_files,
    score_organisers,
    score_records,
    scores_markdown,
)
from qwenvl.flare.runfiles import EVAL_REPORT_HTML

Q = "Question: What does this smear show? Options: A: Normal B: Myelofibrosis C: Leukemia"
YN = "Is there jaundice? A. No, B. Yes"
ML = "Which findings? Options: A: Effusion B: Nodule C: Cardiomegaly"


def raw(task, image, question, answer) -> dict:
    return {"TaskType": task, "Modality": "x", "ImageName": image, "Question": question, "Answer": answer}


def answered(record: dict, answer) -> dict:
    return {**record, "Answer": answer}


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


BM = [raw("Classification", f"imagesVal/bm{k}.jpg", Q, a) for k, a in enumerate("ABBC")]
HIDDEN = [raw("Classification", f"imagesVal/h{k}.jpg", Q, a) for k, a in enumerate("AC")]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A raw root: validation-public with bone_marrow's 4 records; validation-hidden with the answer-less
    file and its _withGT copy (2 records), which the organisers' script never reads."""
    write(tmp_path / "raw/validation-public/Microscopy/bone_marrow/bone_marrow_questions_val.json", BM)
    hidden = tmp_path / "raw/validation-hidden/Microscopy/bone_marrow"
    write(hidden / "bone_marrow_questions_val.json", [answered(r, "") for r in HIDDEN])
    write(hidden / "bone_marrow_questions_val_withGT.json", HIDDEN)
    return tmp_path / "raw"


# ------------------------------------------------------------------------------------------------ the rules
def test_with_gt_files_outside_validation_public_are_an_extra_table_never_the_headline(tree: Path):
    preds = write(
        tree.parent / "predictions.json",
        [answered(r, a) for r, a in zip(BM + HIDDEN, ["A", "B", "C", "C", "A", "A"])],
    )
    # the raw root stands for its validation-public, as the organisers' --base_dataset_path does
    m = score_files(preds, tree, extra_ground_truth=tree / "validation-hidden")
    assert m["record_set"]["rules"] == "organisers"
    assert m["record_set"]["ground_truth"] == [str(tree / "validation-public")]
    # headline: bm A B B C against A B C C: recall A 1/1, B 1/2, C 1/1
    cls = m["by_task"]["classification"]
    assert (cls["n"], cls["balanced_accuracy"]) == (4, pytest.approx((1 + 0.5 + 1) / 3))
    assert (m["n_gt"], m["n_missing_predictions"], m["n_extra_predictions"]) == (4, 0, 2)
    # the extra table: the _withGT records (X_withGT.json replaces X.json), A C against A A: recall A 1, C 0
    extra = m["extra"]
    assert extra["record_set"]["rules"] == "toolkit"
    assert (extra["n_gt"], extra["by_task"]["classification"]["balanced_accuracy"]) == (2, 0.5)
    text = scores_markdown(m)
    assert text.index("# Headline: FLARE25 scores on the organisers' record set") < text.index("# Extra:")
    assert f"# Extra: FLARE25 scores on the answered records of {tree / 'validation-hidden'}" in text


def test_duplicate_keys_keep_the_last_ground_truth_record_and_the_last_prediction(tmp_path: Path, caplog):
    first, second = raw("classification", "a.jpg", YN, "A"), raw("classification", "a.jpg", YN, "B")
    other = raw("classification", "b.jpg", YN, "A")
    truth = write(tmp_path / "validation-public/Clinical/nj/nj_questions_val.json", [first, second, other])
    preds = [answered(first, "A"), answered(first, "B"), answered(other, "B")]
    with caplog.at_level(logging.WARNING):
        m = score_organisers(load_organisers_ground_truth(truth.parents[2]), preds)
    # one record per key: a.jpg with its last reference B, answered by its last prediction B; b.jpg A with B
    # recall B 1/1, A 0/1
    cls = m["by_task"]["classification"]
    assert (cls["n"], cls["balanced_accuracy"], cls["accuracy"]) == (2, 0.5, 0.5)
    rs = m["record_set"]
    assert (rs["n_duplicate_gt_keys"], rs["n_duplicate_prediction_keys"]) == (1, 1)
    assert "the last one kept" in caplog.text
    # the toolkit's rules on the same records pair duplicates in order: 3 scored, a.jpg A-A and B-B right
    toolkit = score_records(load_ground_truth(truth), preds)["by_task"]["classification"]
    assert (toolkit["n"], toolkit["accuracy"]) == (3, pytest.approx(2 / 3))


def test_records_without_a_task_type_are_not_scored_even_as_the_last_of_a_key(tmp_path: Path, caplog):
    root = tmp_path / "validation-public"
    kept = raw("classification", "k.jpg", YN, "A")
    shadowed = raw("classification", "s.jpg", YN, "A")
    records = [
        kept,
        shadowed,
        {**shadowed, "TaskType": ""},  # the last of its key: the key's record has no task type
        raw("  ", "e.jpg", YN, "B"),
        {k: v for k, v in raw("x", "m.jpg", YN, "B").items() if k != "TaskType"},
        raw("Segmentation", "g.jpg", "Segment.", "mask"),  # a task type that is not one of the seven
    ]
    write(root / "Clinical/nj/nj_questions_val.json", records)
    write(root / "dataset_report.json", {"note": "not a question file"})  # one item without a task type
    (root / "Clinical/nj/broken.json").write_text("{not json", encoding="utf-8")
    preds = [answered(r, "A") for r in records]
    with caplog.at_level(logging.WARNING):
        m = score_organisers(load_organisers_ground_truth(root), preds)
    assert m["n_gt"] == 1 and m["by_task"]["classification"]["accuracy"] == 1.0  # k.jpg alone
    rs = m["record_set"]
    assert (rs["n_records_read"], rs["n_no_task_type"], rs["n_unknown_task_type"]) == (7, 4, 1)
    assert (
        rs["n_files"] == 2 and len(rs["unreadable_files"]) == 1 and "broken.json" in rs["unreadable_files"][0]
    )
    assert m["n_gt_skipped"] == 1 and m["n_missing_predictions"] == 0 and m["n_extra_predictions"] == 0
    assert "broken.json: not readable JSON" in caplog.text and "'Segmentation': 1" in caplog.text


def test_missing_predictions_are_left_out_and_counted_loudly_extra_ones_ignored(tree: Path, caplog):
    # bm1 (B) and bm3 (C) have no prediction; one prediction names an image the ground truth lacks
    preds = [answered(BM[0], "A"), answered(BM[2], "C"), raw("Classification", "nowhere.jpg", Q, "A")]
    with caplog.at_level(logging.WARNING):
        m = score_organisers(load_organisers_ground_truth(tree / "validation-public"), preds)
    # scored: bm0 A->A, bm2 B->C: classes A (recall 1) and B (recall 0)
    cls = m["by_task"]["classification"]
    assert (cls["n"], cls["balanced_accuracy"], cls["n_left_out"]) == (2, 0.5, 2)
    assert m["by_dataset"]["bone_marrow"]["n_left_out"] == 2
    assert (m["n_gt"], m["n_missing_predictions"], m["n_extra_predictions"]) == (2, 2, 1)
    assert m["record_set"]["missing_by_dataset"] == {"bone_marrow": 2}
    assert "2 ground-truth records of" in caplog.text and "left out of the headline score" in caplog.text
    text = scores_markdown(m)
    assert "**Ground truth without a prediction: 2 records: left out of these scores" in text
    assert "| scope | n | balanced_accuracy | accuracy | n_unparsable | n_left_out |" in text
    assert "| **all** | 2 | 0.5000 | 0.5000 | 0 | 2 |" in text
    # an evaluation of a chosen subset (--datasets, --limit) expects them: the same counts, logged as information
    caplog.clear()
    with caplog.at_level(logging.INFO):
        quiet = score_organisers(load_organisers_ground_truth(tree), preds, expected_missing=True)
    assert quiet["n_missing_predictions"] == 2
    assert [r.levelname for r in caplog.records if "left out of the headline" in r.message] == ["INFO"]
    # the toolkit's rules score them as wrong instead: A B B C against A - C -: recall A 1, B 0, C 0
    toolkit = score_records(load_ground_truth(tree / "validation-public"), preds)
    assert toolkit["by_task"]["classification"]["balanced_accuracy"] == pytest.approx(1 / 3)


def test_datasets_without_any_prediction_are_named_and_kept_out_of_the_tables(tree: Path):
    write(
        tree / "validation-public/Clinical/neojaundice/neojaundice_questions_val.json",
        [raw("classification", "n.jpg", YN, "A")],
    )
    m = score_organisers(load_organisers_ground_truth(tree), [answered(BM[0], "A")])
    assert set(m["by_dataset"]) == {"bone_marrow"} and m["by_task"]["classification"]["n_left_out"] == 3
    assert m["record_set"]["datasets_without_predictions"] == ["neojaundice"]
    assert m["n_missing_predictions"] == 4
    assert "in the datasets scored: bone_marrow 3; 1 datasets without any prediction: neojaundice 1" in (
        scores_markdown(m)
    )


def test_a_list_image_name_is_keyed_as_python_writes_it_order_and_text_exact(tmp_path: Path):
    images = ["imagesVal/n1_a.jpg", "imagesVal/n1_b.jpg"]
    gt = raw("classification", images, YN, "B")
    assert organisers_key(gt) == ("['imagesVal/n1_a.jpg', 'imagesVal/n1_b.jpg']", YN)
    truth = write(tmp_path / "validation-public/Clinical/neojaundice/neojaundice_questions_val.json", [gt])
    loaded = load_organisers_ground_truth(truth)  # a single question file: its dataset from its name
    assert [d for d, _ in loaded.records] == ["neojaundice"]

    def headline(pred: dict) -> tuple:
        m = score_organisers(loaded, [pred])
        return m["n_gt"], m["n_missing_predictions"], m["n_extra_predictions"]

    assert headline(answered(gt, "B")) == (1, 0, 0)
    assert headline({**answered(gt, "B"), "ImageName": images[::-1]}) == (0, 1, 1)  # another order
    assert headline({**answered(gt, "B"), "ImageName": str(images)}) == (1, 0, 0)  # the same text
    assert headline({**answered(gt, "B"), "Question": YN + " "}) == (0, 1, 1)  # nothing trimmed
    assert headline({**answered(gt, "B"), "ImageName": json.dumps(images)}) == (0, 1, 1)  # JSON is not str()


def test_report_generation_and_the_other_task_types_by_the_organisers_definitions(tmp_path: Path):
    rep = [
        raw("Report_Generation", [f"f{k}.png", f"l{k}.png"], "Write the report.", "no acute disease")
        for k in range(3)
    ]
    counting = [raw("Counting", f"c{k}.png", "How many cells?", str(v)) for k, v in enumerate((120, 200))]
    labels = [
        raw("Multi-label Classification", f"x{k}.png", ML, a)
        for k, a in enumerate(("Effusion; Nodule", "Cardiomegaly"))
    ]
    root = tmp_path / "validation-public"
    write(root / "Xray/IU_XRay/IU_XRay_questions_val.json", rep)
    write(root / "Microscopy/neurips22cell/neurips22cell_questions_val.json", counting)
    write(root / "Xray/chestdr/chestdr_questions_val.json", labels)
    preds = [
        answered(rep[0], "no acute disease"),  # ROUGE-L F 1
        answered(rep[1], "acute disease"),  # LCS 2 of 3: P 1, R 2/3, F 0.8
        # rep[2] has no prediction: left out, not a zero
        answered(counting[0], "110"),
        answered(counting[1], "190"),
        answered(labels[0], "effusion, cardiomegaly"),  # TP effusion, FP cardiomegaly, FN nodule
        answered(labels[1], "Cardiomegaly"),  # TP
    ]
    calls = []

    def judge(refs, hyps):
        calls.append(hyps)
        return [1.0, 0.5]

    m = score_organisers(load_organisers_ground_truth(root), preds, green_fn=judge)
    report = m["by_task"]["report_generation"]
    assert (report["n"], report["n_left_out"]) == (2, 1)
    assert report["rougeL"] == pytest.approx((1.0 + 0.8) / 2)
    assert calls == [["no acute disease", "acute disease"]] and report["green"] == 0.75
    assert m["by_task"]["counting"]["mae"] == pytest.approx(10.0)  # |120 - 110| and |200 - 190|
    ml = m["by_task"]["multi-label classification"]
    assert (ml["tp"], ml["fp"], ml["fn"], ml["f1"]) == (2, 1, 1, pytest.approx(2 / 3))  # 2TP / (2TP+FP+FN)


# --------------------------------------------------------------------------------------- the evaluation
def _converted(
    tmp: Path, folder: str, image: str, question: str, answer: str, source: Path, index: int
) -> dict:
    return {
        "image": str(tmp / "img.png"),
        "conversations": [
            {"from": "human", "value": "<image>\n" + question},
            {"from": "gpt", "value": answer},
        ],
        "meta": {
            "dataset": "bone_marrow",
            "task_type": "classification",
            "split": "val",
            "source_split_folder": folder,
            "source_file": str(source),
            "source_index": index,
            "image_name": image,
            "question": question,
            "has_answer": True,
        },
    }


def test_an_evaluation_puts_the_headline_first_and_the_converted_split_apart(tree: Path, tmp_path: Path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "img.png")
    public = tree / "validation-public/Microscopy/bone_marrow/bone_marrow_questions_val.json"
    hidden = tree / "validation-hidden/Microscopy/bone_marrow/bone_marrow_questions_val_withGT.json"
    records = [
        _converted(tmp_path, "validation-public", r["ImageName"], Q, r["Answer"], public, k)
        for k, r in enumerate(BM[:3])
    ] + [
        _converted(tmp_path, "validation-hidden", r["ImageName"], Q, r["Answer"], hidden, k)
        for k, r in enumerate(HIDDEN)
    ]
    answers = ["A", "B", "C", "C", "C"]  # bm0-2 (A B B): recall A 1, B 1/2; hidden A C: C right, A wrong
    result = evaluate_records(records, lambda recs: answers, tmp_path / "eval", {"split": "val"})
    m = result.metrics
    assert m["record_set"]["rules"] == "organisers" and m["n_missing_predictions"] == 1  # bm3: not evaluated
    assert (m["n_gt"], m["by_task"]["classification"]["balanced_accuracy"]) == (3, 0.75)
    extra = m["extra"]  # all 5, the _withGT ones included: A B B A C against A B C C C
    assert extra["record_set"]["sources"] == {"validation-public": 3, "validation-hidden _withGT": 2}
    assert extra["n_gt"] == 5 and extra["by_task"]["classification"]["balanced_accuracy"] == pytest.approx(
        (0.5 + 0.5 + 1) / 3
    )
    assert m["record_set"]["n_predictions_other_folders"] == 2

    md = (tmp_path / "eval/metrics.md").read_text()
    first_table = md.index("| scope |")
    assert md.index("## Headline: FLARE25 scores on the organisers' record set") < first_table
    assert md.index("## Extra: FLARE25 scores on the converted val split as evaluated") > first_table
    assert "| **all** | 3 | 0.7500 | 0.6667 | 0 | 1 |" in md  # n, balanced accuracy, accuracy, n_left_out 1

    page = (tmp_path / "eval" / EVAL_REPORT_HTML).read_text()
    assert (
        page.index("Headline: the organisers&#x27;")
        < page.index("Extra, not the headline")
        < page.index("id='ds-0'")
    )
    assert "Ground truth without a prediction: 1 records" in page
    section = page.split("id='ds-0'")[1]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", section.split("</table>")[0])
    assert cells[:4] == ["headline", "3", "0.7500", "0.6667"]
    assert "extra: converted split" in section.split("</table>")[0]

    # another run compared: headline numbers, a line saying so, and the extra record sets after them
    again = evaluate_records(
        records,
        lambda recs: ["A"] * 5,
        tmp_path / "constant",
        {"split": "val"},
        compare_dir=tmp_path / "eval",
    )
    lines = again.comparison.splitlines()
    assert lines[2] == (
        "Headline numbers: each run on the organisers' record set (records scored, ground truth without a "
        "prediction left out): constant 3 scored, 1 left out; eval 3 scored, 1 left out."
    )
    assert "| bone_marrow | balanced_accuracy (higher is better) | 0.5000 | 0.7500 | -0.2500 |" in lines[4:8]
    assert "### Extra: the converted split as evaluated (not the headline)" in lines


def test_without_the_raw_tree_the_converted_split_stands_alone_and_says_why(tree: Path, tmp_path: Path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "img.png")
    gone = tmp_path / "moved/validation-public/Microscopy/bone_marrow/bone_marrow_questions_val.json"
    records = [
        _converted(tmp_path, "validation-public", r["ImageName"], Q, r["Answer"], gone, k)
        for k, r in enumerate(BM)
    ]
    m = evaluate_records(records, lambda recs: ["A"] * 4, tmp_path / "a", {"split": "val"}).metrics
    assert m["record_set"]["rules"] == "toolkit" and "--ground_truth" in m["record_set"]["no_headline"]
    assert "**No headline**" in (tmp_path / "a/metrics.md").read_text()
    # given the tree, the headline is back
    m = evaluate_records(
        records,
        lambda recs: ["A"] * 4,
        tmp_path / "b",
        {"split": "val"},
        ground_truth=tree / "validation-public",
    ).metrics
    assert m["record_set"]["rules"] == "organisers" and m["n_gt"] == 4
