"""The validator of converted files: passes clean output, flags each kind of damage on its own, warns on leaks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from data_conversion import validate_conversion as cli
from data_conversion.converter import REPORT_NAME, convert
from data_conversion.make_demo_dataset import make_demo_dataset
from data_conversion.validation import errors_by, validate
from qwenvl.flare.datasets import FLARE_DATASETS
from qwenvl.flare.tasks.box_prompt import GRID_SENTENCE

SPS = 2


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("validation")
    make_demo_dataset(base / "raw", seed=1, samples_per_split=SPS)
    convert(base / "raw", base / "out", list(FLARE_DATASETS), ["train", "val", "test"], progress=False)
    return base / "out"


def _load(path: Path) -> list:
    return json.loads(path.read_text(encoding="utf-8"))


def _dump(path: Path, records: list) -> None:
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")


def _images(rec: dict) -> list[str]:
    return rec["image"] if isinstance(rec["image"], list) else [rec["image"]]


@pytest.fixture
def private(converted, tmp_path) -> Path:
    """Private copies of the neojaundice / BUSI-det train + val files and their images, safe to damage."""
    out = tmp_path / "conv"
    out.mkdir()
    for name in ("neojaundice_train", "neojaundice_val", "BUSI-det_train", "BUSI-det_val", "BUSI-det_test"):
        records = _load(converted / f"{name}.json")
        for i, rec in enumerate(records):
            copies = []
            for j, src in enumerate(_images(rec)):
                dst = tmp_path / "img" / name / f"{i}_{j}{Path(src).suffix}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                copies.append(str(dst))
            rec["image"] = copies if isinstance(rec["image"], list) else copies[0]
        _dump(out / f"{name}.json", records)
    return out


def test_clean_output_passes_with_exact_stats(converted):
    report = validate(converted)
    assert report["ok"] is True
    assert (report["n_errors"], report["n_warnings"]) == (0, 0)
    assert REPORT_NAME not in report["files"]
    assert (
        len(report["files"]) == 19 * 4 - 1
    )  # chestdr's hidden validation is labelled (withGT): no val_hidden
    neo = report["files"]["neojaundice_train.json"]
    assert (neo["records"], neo["images"], neo["distinct_images"], neo["multi_image_records"]) == (2, 6, 6, 2)
    assert neo["task_types"] == {"classification": 2} and neo["labelled_records"] == 2
    hidden = report["files"]["retino_val_hidden.json"]
    assert (hidden["records"], hidden["labelled_records"]) == (2, 0)
    chestdr = report["files"]["chestdr_val.json"]
    assert chestdr["records"] == 2 * SPS
    assert sum(s["records"] for s in report["files"].values()) == 19 * 4 * SPS


def test_private_copy_is_clean(private):
    report = validate(private)
    assert report["ok"] and report["n_warnings"] == 0
    assert sorted(report["files"]) == [
        "BUSI-det_test.json",
        "BUSI-det_train.json",
        "BUSI-det_val.json",
        "neojaundice_train.json",
        "neojaundice_val.json",
    ]


def _only_error(report: dict) -> dict:
    assert report["ok"] is False
    [error] = report["errors"]
    return error


def test_deleted_image(private):
    rec = _load(private / "neojaundice_train.json")[1]
    Path(rec["image"][2]).unlink()
    error = _only_error(validate(private))
    assert (error["file"], error["index"], error["check"]) == ("neojaundice_train.json", 1, "missing_image")
    assert rec["image"][2] in error["detail"]


def test_corrupt_image(private):
    rec = _load(private / "BUSI-det_val.json")[0]
    Path(rec["image"]).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    error = _only_error(validate(private))
    assert (error["file"], error["index"], error["check"]) == ("BUSI-det_val.json", 0, "corrupt_image")


def test_empty_answer_in_labelled_file_only(private):
    records = _load(private / "BUSI-det_train.json")
    records[1]["conversations"][1]["value"] = "  "
    _dump(private / "BUSI-det_train.json", records)
    error = _only_error(validate(private))
    assert (error["file"], error["index"], error["check"]) == ("BUSI-det_train.json", 1, "empty_answer")
    # The inference file's empty answers are expected (meta.has_answer is false).
    assert all(r["conversations"][1]["value"] == "" for r in _load(private / "BUSI-det_test.json"))


def test_duplicate(private):
    records = _load(private / "neojaundice_val.json")
    _dump(private / "neojaundice_val.json", records + [dict(records[0])])
    error = _only_error(validate(private))
    assert (error["file"], error["index"], error["check"]) == ("neojaundice_val.json", SPS, "duplicate")
    assert error["detail"] == "same images and question as record 0"


def test_tag_image_count_mismatch(private):
    records = _load(private / "neojaundice_train.json")
    human = records[0]["conversations"][0]
    human["value"] = human["value"].replace("<image>\n", "", 1)
    _dump(private / "neojaundice_train.json", records)
    error = _only_error(validate(private))
    assert (error["file"], error["index"], error["check"]) == (
        "neojaundice_train.json",
        0,
        "image_tag_mismatch",
    )
    assert error["detail"] == "2 <image> tag(s) for 3 image(s)"


def test_box_off_the_grid_and_unreadable_file(private):
    records = _load(private / "BUSI-det_train.json")
    records[0]["conversations"][1]["value"] = "[[10, 20, 1500, 40]]"
    _dump(private / "BUSI-det_train.json", records)
    error = _only_error(validate(private))
    assert (error["file"], error["index"], error["check"]) == ("BUSI-det_train.json", 0, "bad_box_answer")
    (private / "BUSI-det_val.json").write_text('[{"image": ')
    report = validate(private)
    assert [e["check"] for e in report["errors"]] == ["bad_box_answer", "unreadable_file"]
    assert errors_by(report, "unreadable_file")[0]["file"] == "BUSI-det_val.json"


def test_structure_errors(private):
    records = _load(private / "BUSI-det_train.json")
    no_image = {**records[0], "image": []}
    records[0]["conversations"] = [{"from": "gpt", "value": "x"}, {"from": "human", "value": "<image>\ny"}]
    del records[1]["conversations"]
    _dump(private / "BUSI-det_train.json", records + [no_image, "not a record"])
    report = validate(private)
    assert [(e["index"], e["check"]) for e in report["errors"]] == [
        (0, "invalid_record"),
        (1, "invalid_record"),
        (2, "invalid_record"),
        (3, "invalid_record"),
    ]
    details = [e["detail"] for e in report["errors"]]
    assert details == [
        "conversations[0].from is 'gpt', expected 'human' (turns alternate human/gpt)",
        "'conversations' must be a list of at least two turns",
        "'image' must be a non-empty path or a non-empty list of paths",
        "record is a JSON str, expected an object",
    ]


def test_train_val_leak_is_a_warning_per_record_naming_dataset_split_and_image(private, capsys):
    train = _load(private / "neojaundice_train.json")
    val = _load(private / "neojaundice_val.json")
    leaked = Path(val[0]["image"][1])
    shutil.copyfile(train[1]["image"][0], leaked)  # same bytes under another name
    report = validate(private)
    assert report["ok"] is True and report["n_errors"] == 0
    [warning] = report["warnings"]
    assert (warning["file"], warning["index"], warning["check"]) == (
        "neojaundice_val.json",
        0,
        "train_val_leak",
    )
    assert (warning["dataset"], warning["split"]) == ("neojaundice", "val")
    assert warning["image_name"] == val[0]["meta"]["image_name"]
    assert warning["detail"] == (
        f"image {leaked} is byte-identical to {train[1]['image'][0]} of neojaundice_train.json "
        f"(record 1, ImageName {json.dumps(train[1]['meta']['image_name'])})"
    )
    assert report["files"]["neojaundice_val.json"]["warnings"] == 1
    assert report["warning_counts"] == {"train_val_leak": 1}
    assert cli.main(["--input_dir", str(private)]) == 0
    out = capsys.readouterr().out
    assert f"neojaundice_val.json[0] {json.dumps(val[0]['meta']['image_name'])} train_val_leak" in out


def test_leaks_are_grouped_by_image(private):
    """Two val records showing the same leaked image are both named (any split must group by image)."""
    train = _load(private / "BUSI-det_train.json")
    val = _load(private / "BUSI-det_val.json")
    shutil.copyfile(train[0]["image"], val[1]["image"])
    second = {**val[1], "conversations": [dict(t) for t in val[1]["conversations"]]}
    second["meta"] = {**val[1]["meta"], "question": "Another question about the same image?"}
    second["conversations"][0]["value"] = "<image>\n" + second["meta"]["question"] + " " + GRID_SENTENCE
    _dump(private / "BUSI-det_val.json", val + [second])
    report = validate(private)
    assert report["ok"], report["errors"]
    assert [(w["file"], w["index"], w["check"]) for w in report["warnings"]] == [
        ("BUSI-det_val.json", 1, "train_val_leak"),
        ("BUSI-det_val.json", SPS, "train_val_leak"),
    ]


def test_noisy_answers_and_stale_prompts_are_warnings(private):
    records = _load(private / "neojaundice_train.json")
    records[0]["conversations"][1]["value"] = "T"
    records[1]["conversations"][1]["value"] = "A B"
    _dump(private / "neojaundice_train.json", records)
    busi = _load(private / "BUSI-det_train.json")
    busi[0]["conversations"][0]["value"] = (
        "<image>\n" + busi[0]["meta"]["question"]
    )  # as converted before the rule
    _dump(private / "BUSI-det_train.json", busi)
    report = validate(private)
    assert report["ok"] is True
    got = [(w["file"], w["index"], w["check"], w["dataset"], w["split"]) for w in report["warnings"]]
    assert got == [
        ("BUSI-det_train.json", 0, "prompt_mismatch", "BUSI-det", "train"),
        ("neojaundice_train.json", 0, "answer_not_an_option", "neojaundice", "train"),
        ("neojaundice_train.json", 1, "several_answers_single_label", "neojaundice", "train"),
    ]
    details = {w["check"]: w["detail"] for w in report["warnings"]}
    assert details["answer_not_an_option"] == "answer 'T' is not one of the offered letters A, B"
    assert details["several_answers_single_label"] == (
        "answer 'A B' gives 2 letters on a single-label question (options A, B)"
    )
    assert "rule box_grid_rewrite" in details["prompt_mismatch"]
    assert report["warnings"][1]["image_name"] == records[0]["meta"]["image_name"]


def test_cli_exit_codes_and_saved_report(private, tmp_path, capsys):
    saved = tmp_path / "reports" / "validation.json"
    assert cli.main(["--converted_dir", str(private), "--save_report", str(saved)]) == 0
    assert _load(saved)["ok"] is True
    Path(_load(private / "BUSI-det_train.json")[0]["image"]).unlink()
    assert cli.main(["--input_dir", str(private), "--save_report", str(saved)]) == 1
    assert _load(saved)["error_counts"] == {"missing_image": 1}
    assert "FAILED" in capsys.readouterr().out
    assert cli.main(["--input_dir", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["--input_dir", str(empty)]) == 1
