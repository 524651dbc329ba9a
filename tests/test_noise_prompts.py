"""Known noise of the real data and the box-prompt rule: the task types' own rules on hand-written questions and
answers, the converter skipping (or, with --keep_noisy, keeping and listing) noisy records, train/val leaks
grouped by image in the report, and evaluate_flare.py --drop_leaked_val."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_conversion import convert_flare_to_qwen3vl as cli
from data_conversion.converter import convert
from data_conversion.make_demo_dataset import make_demo_dataset
from qwenvl.eval.cli import parse_evaluate_args
from qwenvl.eval.evaluate import EvalOptions, run_evaluation
from qwenvl.flare.tasks import TASK_TYPES, task_for
from qwenvl.flare.tasks.base import FALLBACK_TEXT

SPS = 4  # iugc validation: records 0-2 ask about image 0 (leaked with --with-defects), record 3 about image 1
GRID = "as integers on a 0-1000 grid relative to the image width and height"
SENTENCE = "Give box coordinates as integers on a 0-1000 grid relative to the image width and height."


# ---------------------------------------------------------------------------------------------- the prompt rule
@pytest.mark.parametrize(
    "question, prompt, rule",
    [
        (
            "Detect all lesions. Answer with bounding boxes [[x1, y1, x2, y2], ...] in pixel coordinates.",
            f"Detect all lesions. Answer with bounding boxes [[x1, y1, x2, y2], ...] {GRID}.",
            "box_grid_rewrite",
        ),
        (
            "Locate every lesion and give their bounding boxes in pixels.",
            f"Locate every lesion and give their bounding boxes {GRID}.",
            "box_grid_rewrite",
        ),
        (
            "Give the boxes using the original image pixel values.",
            f"Give the boxes {GRID}.",
            "box_grid_rewrite",
        ),
        (
            "Return pixel coordinates of every box.",
            "Return 0-1000 grid coordinates (relative to the image width and height) of every box.",
            "box_grid_rewrite",
        ),
        ("Where is the fetal head?  ", f"Where is the fetal head? {SENTENCE}", "box_grid_append"),
        ("Boxes as integers 0-1000, please.", "Boxes as integers 0-1000, please.", "verbatim"),
    ],
)
@pytest.mark.parametrize("task", ["detection", "instance_detection"])
def test_box_prompts_state_the_grid(task, question, prompt, rule):
    t = task_for(task)
    assert (t.prompt(question, "qwen1000"), t.prompt_rule(question, "qwen1000")) == (prompt, rule)
    # pixel answers: the question is right as it is
    assert (t.prompt(question, "pixel"), t.prompt_rule(question, "pixel")) == (question, "verbatim")


def test_other_task_types_keep_the_question_verbatim():
    question = "What is the distance in millimetres? The pixel spacing is 0.2 mm, in pixel coordinates."
    for name in TASK_TYPES:
        t = task_for(name)
        if not t.has_boxes:
            assert (t.prompt(question, "qwen1000"), t.prompt_rule(question, None)) == (question, "verbatim")


# ------------------------------------------------------------------------------------------------ answer noise
Q = "Question: Which finding is shown? Options: A: Normal B: Polyp C: Ulcer"


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("B", None),
        (" c ", None),
        ("(A)", None),
        ("B.", None),
        ("T", ("answer_not_an_option", "answer 'T' is not one of the offered letters A, B, C")),
        ("D", ("answer_not_an_option", "answer 'D' is not one of the offered letters A, B, C")),
        ("Polyp", None),  # an option's own text: a dataset answering in texts
        ("Polyps", ("answer_not_an_option", "answer 'Polyps' is not one of the offered letters A, B, C")),
        (
            "A B",
            ("several_answers_single_label", "answer 'A B' gives 2 letters on a single-label question (options A, B, C)"),
        ),
        (
            "A, C;B",
            ("several_answers_single_label", "answer 'A, C;B' gives 3 letters on a single-label question (options A, B, C)"),
        ),
    ],
)  # fmt: skip
def test_classification_noise(answer, expected):
    assert task_for("classification").raw_answer_problem(answer, Q) == expected


def test_noise_needs_options_and_a_single_label_task():
    assert task_for("classification").raw_answer_problem("T", "Is it benign?") is None  # nothing to judge by
    assert task_for("multi-label classification").raw_answer_problem("A B", Q) is None
    assert task_for("detection").raw_answer_problem("[[1, 2, 3, 4]]", "Where?") is None


@pytest.mark.parametrize(
    "task, question, fallback",
    [
        ("classification", Q, "A"),
        ("classification", "Is it benign?", "A"),
        ("multi-label classification", Q, "Normal"),  # the default vocabulary: option texts
        ("multi-label classification", Q + ". Separate letters with commas.", "A"),  # the question's rule
        ("multi-label classification", "Which findings?", FALLBACK_TEXT),
        ("detection", "Where?", "[]"),
        ("instance_detection", "Where?", "{}"),
        ("counting", "How many?", 0),
        ("regression", "How long?", 0),
        ("report_generation", "Describe the findings.", FALLBACK_TEXT),
    ],
)
def test_fallback_answers_are_read_by_the_scorer(task, question, fallback):
    t = task_for(task)
    assert t.fallback_answer(question) == fallback
    assert t.parse(fallback, question) is not None


# ------------------------------------------------------------------------------------------------- conversion
@pytest.fixture(scope="module")
def defective(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("noise") / "raw"
    make_demo_dataset(raw, samples_per_split=SPS, with_defects=True)
    return raw


def test_noisy_records_are_skipped_by_default_and_kept_with_keep_noisy(defective, tmp_path, capsys):
    skipped = convert(defective, tmp_path / "skip", ["CMMD", "endo"], ["train", "val"], progress=False)
    reasons = {(s["dataset"], s["split"], s["source_index"]): s["reason"] for s in skipped["skipped"]}
    assert reasons == {
        ("CMMD", "train", 0): "several_answers_single_label",
        ("endo", "val", 0): "answer_not_an_option",
    }
    assert skipped["kept_noisy"] == [] and skipped["settings"]["keep_noisy"] is False

    argv = ["--input_dir", str(defective), "--output_dir", str(tmp_path / "keep"), "--datasets", "CMMD", "endo",
            "--keep_noisy", "--no_progress", "--verbose"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "kept (--keep_noisy) CMMD train CMMD_questions_train.json[0]" in out
    assert "endo val: kept 1 noisy record(s), answer_not_an_option (--keep_noisy)" in out
    report = json.loads((tmp_path / "keep" / "conversion_report.json").read_text())
    assert report["settings"]["keep_noisy"] is True
    kept = {(k["dataset"], k["split"], k["source_index"], k["reason"]) for k in report["kept_noisy"]}
    assert kept == {
        ("CMMD", "train", 0, "several_answers_single_label"),
        ("endo", "val", 0, "answer_not_an_option"),
    }
    assert all(k["image_name"] and k["source_file"].endswith(".json") for k in report["kept_noisy"])
    cmmd = report["datasets"]["CMMD"]["train"]
    assert (cmmd["raw"], cmmd["converted"], cmmd["skipped"], cmmd["kept_noisy"]) == (
        SPS, SPS, 0, {"several_answers_single_label": 1},
    )  # fmt: skip
    assert report["totals"]["kept_noisy"] == {"answer_not_an_option": 1, "several_answers_single_label": 1}
    [first] = [
        r
        for r in json.loads((tmp_path / "keep" / "CMMD_train.json").read_text())
        if r["meta"]["source_index"] == 0
    ]
    assert first["conversations"][1]["value"] == "A B"


def test_leaks_are_reported_grouped_by_image_against_this_or_an_earlier_run(defective, tmp_path):
    report = convert(defective, tmp_path, ["iugc"], ["train", "val"], progress=False)
    entry = report["datasets"]["iugc"]["val"]
    assert entry["train_val_leaks"] == {
        "records": 3,
        "images": 1,
        "checked_against": "this run's training records",
    }
    assert entry["converted"] == entry["raw"] == SPS  # reported, not skipped
    leaks = report["train_val_leaks"]
    assert [(x["dataset"], x["split"], x["source_index"], x["reason"]) for x in leaks] == [
        ("iugc", "val", k, "train_val_leak") for k in range(3)
    ]
    assert {x["image_name"] for x in leaks} == {"imagesVal/iugc_0000.png"}
    assert all(x["train_image"].endswith("imagesTr/iugc_0000.png") for x in leaks)
    # A later run of the val split alone compares with the training file the first run left.
    again = convert(defective, tmp_path, ["iugc"], ["val"], progress=False)
    assert again["datasets"]["iugc"]["val"]["train_val_leaks"]["checked_against"] == str(
        tmp_path / "iugc_train.json"
    )
    assert again["train_val_leaks"] == leaks
    # With no training records anywhere, the check is not made (null), never reported as clean.
    alone = convert(defective, tmp_path / "alone", ["iugc"], ["val"], progress=False)
    assert alone["datasets"]["iugc"]["val"]["train_val_leaks"] is None


def test_box_records_show_the_rule_and_keep_the_original_question(defective, tmp_path):
    grid = convert(defective, tmp_path / "grid", ["BUSI-det"], ["val"], progress=False)
    pixel = convert(defective, tmp_path / "pixel", ["BUSI-det"], ["val"], "pixel", progress=False)
    assert grid["datasets"]["BUSI-det"]["val"]["prompt_rules"] == {"box_grid_rewrite": SPS}
    assert pixel["datasets"]["BUSI-det"]["val"]["prompt_rules"] == {"verbatim": SPS}
    for folder, rule in (("grid", "box_grid_rewrite"), ("pixel", "verbatim")):
        for rec in json.loads((tmp_path / folder / "BUSI-det_val.json").read_text()):
            question = rec["meta"]["question"]
            assert question.endswith("in pixel coordinates.")  # the original
            assert rec["meta"]["prompt_rule"] == rule
            human = rec["conversations"][0]["value"]
            assert human == "<image>\n" + (
                question.replace("in pixel coordinates", GRID) if rule != "verbatim" else question
            )


# ------------------------------------------------------------------------------------------------- evaluation
def test_drop_leaked_val_leaves_out_every_record_of_a_leaked_image(defective, tmp_path, registry_at):
    registry_at(tmp_path / "conv")
    convert(defective, tmp_path / "conv", ["iugc"], ["train", "val"], progress=False)
    registry_at(tmp_path / "conv")
    seen: list[dict] = []

    def echo(records):
        seen.extend(records)
        return [r["conversations"][-1]["value"] for r in records]

    options = EvalOptions(model_path="unused", output_dir=str(tmp_path / "ev"), datasets=["iugc"], split="val",
                          drop_leaked_val=True, progress=False)  # fmt: skip
    result = run_evaluation(options, generator=echo)
    assert [r["meta"]["source_index"] for r in seen] == [3]  # 0-2 show the leaked image
    assert result.summary["dropped_leaked_val"] == {"iugc": {"records": 3, "images": 1}}
    assert [p["ImageName"] for p in result.predictions] == ["imagesVal/iugc_0001.png"]
    options.drop_leaked_val, options.output_dir = False, str(tmp_path / "all")
    assert len(run_evaluation(options, generator=echo).predictions) == SPS
    assert parse_evaluate_args(
        ["--model_path", "m", "--output_dir", "o", "--drop_leaked_val"]
    ).drop_leaked_val
