"""FLARE25 raw tree -> Qwen3-VL JSON: image rules, answer rules, and end-to-end runs on the demo tree."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from data_conversion import convert_flare_to_qwen3vl as cli
from data_conversion import converter, records
from data_conversion.converter import ConversionInputError, convert, resolve_conversion_datasets
from data_conversion.make_demo_dataset import make_demo_dataset
from qwenvl.flare.answers import AnswerError, read_literal
from qwenvl.flare.boxes import grid_to_pixel
from qwenvl.flare.datasets import FLARE_DATASETS, STARTER_DATASETS
from qwenvl.flare.images import check_image, inspect_image, load_rgb, read_image_size, to_rgb
from qwenvl.flare.jsonio import write_json_atomic
from qwenvl.flare.paths import REPO_ROOT
from qwenvl.flare.tasks import task_for

SPS = 3  # samples_per_split of the demo trees
ALL_SPLITS = ["train", "val", "test"]


# ----------------------------------------------------------------------------------------------------------
# Fixtures: one clean and one defective demo tree per module, each converted once with --all
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    base = tmp_path_factory.mktemp("clean")
    summary = make_demo_dataset(base / "raw", seed=0, samples_per_split=SPS)
    report = convert(base / "raw", base / "out", list(FLARE_DATASETS), ALL_SPLITS, progress=False)
    return {"raw": base / "raw", "out": base / "out", "summary": summary, "report": report}


@pytest.fixture(scope="module")
def defective(tmp_path_factory):
    base = tmp_path_factory.mktemp("defects")
    summary = make_demo_dataset(base / "raw", seed=0, samples_per_split=SPS, with_defects=True)
    report = convert(base / "raw", base / "out", list(FLARE_DATASETS), ALL_SPLITS, progress=False)
    return {"raw": base / "raw", "out": base / "out", "summary": summary, "report": report}


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def _raw_record(rec: dict) -> dict:
    return _load(Path(rec["meta"]["source_file"]))[rec["meta"]["source_index"]]


def _converted_records(out: Path):
    for path in sorted(out.glob("*.json")):
        if path.name != converter.REPORT_NAME:
            yield from ((path, rec) for rec in _load(path))


# ----------------------------------------------------------------------------------------------------------
# images.py
# ----------------------------------------------------------------------------------------------------------


def _pixels(img: Image.Image) -> list:
    assert img.mode == "RGB"
    return [img.getpixel((x, y)) for y in range(img.size[1]) for x in range(img.size[0])]


def _gray(values) -> list:
    return [(v, v, v) for v in values]


def test_16bit_png_rescaled_by_own_range(tmp_path):
    path = tmp_path / "i16.png"
    Image.fromarray(np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    # v * 255 / 65535 rounded: 3.89 -> 4, 116.73 -> 117
    assert _pixels(load_rgb(path)) == _gray([0, 4, 117, 255])
    # A 12-bit-range image (max 4000) is stretched, not clipped to white: 2000 -> 127.5 -> 128.
    Image.fromarray(np.array([[0, 2000, 4000]], dtype=np.uint16)).save(path)
    assert _pixels(load_rgb(path)) == _gray([0, 128, 255])
    # The range is the image's own min..max: 100..300.
    Image.fromarray(np.array([[100, 200, 300, 300]], dtype=np.uint16)).save(path)
    assert _pixels(load_rgb(path)) == _gray([0, 128, 255, 255])


def test_high_depth_in_memory_modes():
    big_endian = Image.frombytes("I;16B", (3, 1), np.array([10, 15, 20], dtype=">u2").tobytes())
    assert big_endian.mode == "I;16B"
    assert _pixels(to_rgb(big_endian)) == _gray([0, 128, 255])
    int32 = Image.fromarray(np.array([[-5, 0, 5, 4]], dtype=np.int32))
    assert int32.mode == "I"
    assert _pixels(to_rgb(int32)) == _gray([0, 128, 255, 230])  # 9 / 10 * 255 = 229.5 -> 230
    floats = Image.fromarray(np.array([[0.5, 1.0, 1.5, np.nan]], dtype=np.float32))
    assert floats.mode == "F"
    assert _pixels(to_rgb(floats)) == _gray([0, 128, 255, 0])
    constant = Image.fromarray(np.full((2, 2), 500, dtype=np.uint16))
    assert _pixels(to_rgb(constant)) == _gray([0, 0, 0, 0])


def test_float_tiff_from_disk(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)).save(path)
    assert Image.open(path).mode == "F"
    assert _pixels(load_rgb(path)) == _gray([0, 128, 255])


def test_alpha_composited_on_white(tmp_path):
    path = tmp_path / "rgba.png"
    rgba = np.array([[[200, 100, 50, 0], [200, 100, 50, 255], [0, 0, 0, 128], [100, 200, 0, 51]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(path)
    # out = c * a + 255 * (1 - a): a = 128/255 -> 127; a = 0.2 -> 20 + 204, 40 + 204, 0 + 204
    assert _pixels(load_rgb(path)) == [(255, 255, 255), (200, 100, 50), (127, 127, 127), (224, 244, 204)]
    la_path = tmp_path / "la.png"
    Image.fromarray(np.array([[[80, 0], [80, 255]]], np.uint8), "LA").save(la_path)
    assert Image.open(la_path).mode == "LA"
    assert _pixels(load_rgb(la_path)) == _gray([255, 80])
    pa = Image.new("PA", (2, 1))
    pa.putpalette([10, 20, 30])
    pa.putdata([(0, 0), (0, 255)])
    assert _pixels(to_rgb(pa)) == [(255, 255, 255), (10, 20, 30)]


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255])
    pal.putpixel((1, 0), 1)
    plain, transparent = tmp_path / "p.png", tmp_path / "pt.png"
    pal.save(plain)
    pal.info["transparency"] = 1
    pal.save(transparent)
    assert Image.open(transparent).mode == "P"
    assert _pixels(load_rgb(plain)) == [(255, 0, 0), (0, 0, 255)]
    assert _pixels(load_rgb(transparent)) == [(255, 0, 0), (255, 255, 255)]


def test_cmyk_gray_and_bilevel(tmp_path):
    cmyk = tmp_path / "cmyk.tif"
    Image.new("CMYK", (1, 1), (0, 255, 255, 0)).save(cmyk)
    assert _pixels(load_rgb(cmyk)) == [(255, 0, 0)]
    jpg = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(jpg, quality=100)
    assert Image.open(jpg).mode == "CMYK"
    r, g, b = load_rgb(jpg).getpixel((4, 4))
    assert r >= 250 and g <= 5 and b <= 5
    gray = tmp_path / "l.png"
    Image.fromarray(np.array([[0, 77, 255]], np.uint8), "L").save(gray)
    assert _pixels(load_rgb(gray)) == _gray([0, 77, 255])
    bilevel = tmp_path / "one.png"
    Image.new("1", (2, 1)).save(bilevel)
    img = Image.open(bilevel)
    img.putpixel((1, 0), 1)
    img.save(bilevel)
    assert _pixels(load_rgb(bilevel)) == _gray([0, 255])


def _exif6(img: Image.Image, path: Path, **kw) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif.tobytes(), **kw)


def test_exif_orientation_applied_and_size_swapped(tmp_path):
    stored = Image.new("RGB", (3, 2), (0, 0, 0))
    stored.putpixel((0, 0), (255, 0, 0))
    png = tmp_path / "rot.png"
    _exif6(stored, png)
    assert read_image_size(png) == (2, 3)
    assert inspect_image(png).size == (2, 3)
    # Orientation 6 = rotate 90 degrees clockwise: the stored top-left pixel ends up top-right.
    assert _pixels(load_rgb(png)) == [(0, 0, 0), (255, 0, 0)] + [(0, 0, 0)] * 4
    jpg = tmp_path / "rot.jpg"
    _exif6(Image.new("RGB", (40, 30), (0, 200, 0)), jpg, quality=95)
    assert Image.open(jpg).size == (40, 30)
    assert read_image_size(jpg) == (30, 40)
    assert load_rgb(jpg).size == (30, 40)
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (40, 30)).save(plain)
    assert read_image_size(plain) == (40, 30)


def test_png_exif_chunk_after_pixel_data(tmp_path):
    """Some writers put eXIf after IDAT: the header-only size must still match what the loader shows."""
    stored = Image.new("RGB", (5, 2), (0, 0, 0))
    stored.putpixel((0, 0), (255, 0, 0))
    buf = tmp_path / "plain.png"
    stored.save(buf)
    data = buf.read_bytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    payload = exif.tobytes()[6:]  # drop the "Exif\0\0" prefix: PNG eXIf holds the TIFF block
    chunk = (
        struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    )
    iend = data.rindex(b"IEND") - 4
    late = tmp_path / "late.png"
    late.write_bytes(data[:iend] + chunk + data[iend:])
    with Image.open(late) as img:
        assert "exif" not in img.info  # not seen by the header parse
    assert read_image_size(late) == (2, 5)
    assert inspect_image(late).size == (2, 5)
    assert load_rgb(late).size == (2, 5)
    assert load_rgb(late).getpixel((1, 0)) == (255, 0, 0)
    assert read_image_size(buf) == (5, 2)


def test_missing_and_corrupt_images_told_apart(tmp_path):
    missing = tmp_path / "nope.png"
    assert inspect_image(missing).problem == "missing"
    assert check_image(missing).startswith("file not found")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\x00\x01not an image" * 20)
    assert inspect_image(garbage).problem == "corrupt"
    assert "cannot decode" in check_image(garbage)
    # A truncated PNG: the header still gives the size, the full decode fails.
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    assert check_image(good) is None
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:2000])
    assert read_image_size(truncated) == (64, 64)
    assert inspect_image(truncated).problem == "corrupt"
    assert inspect_image(tmp_path).problem == "corrupt"  # a folder is not an image


# ----------------------------------------------------------------------------------------------------------
# Answer rules
# ----------------------------------------------------------------------------------------------------------


def test_text_answers_are_stripped_strings():
    assert task_for("classification").target("  B ", (10, 10), "qwen1000") == "B"
    assert task_for("classification").target(3, (10, 10), "qwen1000") == "3"
    assert (
        task_for("multi-label classification").target("caries;crown\n", (10, 10), "qwen1000")
        == "caries;crown"
    )
    assert task_for("report_generation").target(" Findings: x. ", (10, 10), "qwen1000") == "Findings: x."
    # A non-string is JSON, never a Python repr.
    assert task_for("classification").target(["A", "B"], (10, 10), "qwen1000") == '["A", "B"]'


def test_number_answers():
    assert task_for("counting").target(123, (1, 1), "qwen1000") == "123"
    assert task_for("counting").target(" 45 ", (1, 1), "qwen1000") == "45"
    assert task_for("counting").target("12.0", (1, 1), "qwen1000") == "12"
    assert task_for("regression").target(27.4, (1, 1), "qwen1000") == "27.4"
    assert task_for("regression").target("45.50", (1, 1), "qwen1000") == "45.5"
    assert task_for("regression").target("30%", (1, 1), "qwen1000") == "30"
    assert task_for("regression").target(3, (1, 1), "qwen1000") == "3"
    for task, bad in (("counting", "12.5"), ("counting", "-3"), ("counting", "many"), ("regression", "nan")):
        with pytest.raises(AnswerError):
            task_for(task).target(bad, (1, 1), "qwen1000")
    with pytest.raises(AnswerError, match="boolean"):
        task_for("regression").target(True, (1, 1), "qwen1000")


@pytest.mark.parametrize(
    "raw",
    [
        "[[10, 20, 30, 40], [100, 50, 200, 100]]",
        "[(10, 20, 30, 40), (100, 50, 200, 100)]",
        " [[10 20 30 40]\n [100 50 200 100]] ",
        "[[10,\n 20, 30, 40],\n [100, 50, 200, 100]]",
        [[10, 20, 30, 40], [100, 50, 200, 100]],
        "[[10.0, 20.0, 30.0, 40.0], [100, 50, 200, 100]]",
    ],
)
def test_detection_answer_spellings(raw):
    assert (
        task_for("detection").target(raw, (200, 100), "qwen1000")
        == "[[50, 200, 150, 400], [500, 500, 1000, 1000]]"
    )
    assert task_for("detection").target(raw, (200, 100), "pixel") == "[[10, 20, 30, 40], [100, 50, 200, 100]]"


def test_single_box_and_instance_answers():
    assert task_for("detection").target("[10, 20, 30, 40]", (200, 100), "qwen1000") == "[[50, 200, 150, 400]]"
    assert task_for("detection").target("[]", (200, 100), "qwen1000") == "[]"
    raw = "{1: [[10, 20, 30, 40]], '2': [0, 0, 200, 100]}"
    assert (
        task_for("instance_detection").target(raw, (200, 100), "qwen1000")
        == '{"1": [[50, 200, 150, 400]], "2": [[0, 0, 1000, 1000]]}'
    )
    assert task_for("instance_detection").target(raw, (200, 100), "pixel") == (
        '{"1": [[10, 20, 30, 40]], "2": [[0, 0, 200, 100]]}'
    )
    for task, bad in (
        ("detection", "lesion at top left"),
        ("detection", "[[1, 2, 3]]"),
        ("detection", '{"1": [[1, 2, 3, 4]]}'),
        ("instance_detection", "[[1, 2, 3, 4]]"),
        ("detection", [["1", "2", "3", "4"]]),
    ):
        with pytest.raises(AnswerError):
            task_for(task).target(bad, (200, 100), "qwen1000")
    assert read_literal([1, 2]) == [1, 2]


# ----------------------------------------------------------------------------------------------------------
# End to end on the demo tree
# ----------------------------------------------------------------------------------------------------------

EXPECTED_SPLITS = {"train": SPS, "val": SPS, "val_hidden": SPS, "test": SPS}
EXPECTED_SPLITS_CHESTDR = {"train": SPS, "val": 2 * SPS, "test": SPS}  # withGT appended to val, no val_hidden


def test_clean_tree_exact_counts(clean):
    report, out = clean["report"], clean["out"]
    assert list(report["datasets"]) == list(FLARE_DATASETS)
    for name in FLARE_DATASETS:
        expected = EXPECTED_SPLITS_CHESTDR if name == "chestdr" else EXPECTED_SPLITS
        entries = report["datasets"][name]
        assert {s: e["raw"] for s, e in entries.items()} == expected, name
        assert {s: e["converted"] for s, e in entries.items()} == expected, name
        assert all(e["skipped"] == 0 and e["skipped_by_reason"] == {} for e in entries.values()), name
        for split, n in expected.items():
            assert len(_load(out / f"{name}_{split}.json")) == n
            assert entries[split]["output_file"] == str(out / f"{name}_{split}.json")
    files = sorted(p.name for p in out.glob("*.json"))
    assert len(files) == 19 * 4 - 1 + 1  # chestdr has no val_hidden; plus the report
    # 18 datasets x 4 files + chestdr's train, val (public + withGT) and test; its answer-less copy is unread.
    total = 18 * 4 * SPS + 4 * SPS
    assert report["totals"] == {
        "raw": total,
        "converted": total,
        "skipped": 0,
        "skipped_by_reason": {},
        "kept_noisy": {},
        "train_val_leak_records": 0,
    }
    assert (
        report["skipped"] == report["file_errors"] == report["kept_noisy"] == report["train_val_leaks"] == []
    )
    assert all(entries["val"]["train_val_leaks"]["records"] == 0 for entries in report["datasets"].values())
    assert report["settings"]["box_format"] == "qwen1000"
    assert report["settings"]["input_dir"] == str(clean["raw"].resolve())


def test_defects_fully_accounted(defective):
    report = defective["report"]
    for name, entries in report["datasets"].items():
        for split, e in entries.items():
            assert e["raw"] == e["converted"] + e["skipped"], (name, split)
            assert sum(e["skipped_by_reason"].values()) == e["skipped"]
    seeded = defective["summary"]["defects"]
    assert len(seeded) == 9
    folder_to_split = {"training": "train", "validation-public": "val"}
    record_defects = {
        (d["dataset"], folder_to_split[d["split_folder"]], d["index"], d["reason"])
        for d in seeded
        if "index" in d
    }
    reported = {(s["dataset"], s["split"], s["source_index"], s["reason"]) for s in report["skipped"]}
    assert (
        reported
        == record_defects
        == {
            ("retino", "train", 0, "missing_image"),
            ("bone_marrow", "train", 1, "corrupt_image"),
            ("neojaundice", "train", 0, "missing_image"),
            ("boneresorption", "train", 0, "empty_answer"),
            ("BUSI-det", "train", SPS, "duplicate"),
            ("CMMD", "train", 0, "several_answers_single_label"),
            ("endo", "val", 0, "answer_not_an_option"),
        }
    )
    for s in report["skipped"]:
        assert Path(s["source_file"]).parent.parent.parent.name == {"train": "training"}.get(
            s["split"], "validation-public"
        )
        assert s["detail"]
    [unreadable] = [d for d in seeded if d["reason"] == "unreadable_file"]
    [file_error] = report["file_errors"]
    assert (file_error["dataset"], file_error["split"], file_error["reason"]) == (
        "endo",
        "train",
        "unreadable_file",
    )
    assert Path(file_error["source_file"]).name == unreadable["file"]
    endo = report["datasets"]["endo"]["train"]
    assert (endo["raw"], endo["converted"], endo["output_file"]) == (0, 0, None)
    assert endo["file_errors"] == [file_error]
    assert not (defective["out"] / "endo_train.json").exists()
    busi = report["datasets"]["BUSI-det"]["train"]
    assert (busi["raw"], busi["converted"], busi["skipped"]) == (SPS + 1, SPS, 1)
    assert report["totals"]["skipped_by_reason"] == {
        "missing_image": 2,
        "corrupt_image": 1,
        "empty_answer": 1,
        "duplicate": 1,
        "answer_not_an_option": 1,
        "several_answers_single_label": 1,
    }
    assert report["totals"]["train_val_leak_records"] == 3 and report["kept_noisy"] == []
    # Nothing else was lost: every other entry converted all its records.
    affected = {(d, s) for d, s, _, _ in record_defects} | {("endo", "train")}
    for name, entries in report["datasets"].items():
        for split, e in entries.items():
            if (name, split) not in affected:
                assert e["converted"] == e["raw"] > 0, (name, split)


def test_multi_image_record_with_one_missing_image_skipped_whole(defective):
    [skip] = [s for s in defective["report"]["skipped"] if s["dataset"] == "neojaundice"]
    assert skip["reason"] == "missing_image" and skip["source_index"] == 0
    assert len(skip["image_name"]) == 3 and "image 2/3" in skip["detail"]
    records = _load(defective["out"] / "neojaundice_train.json")
    assert [r["meta"]["source_index"] for r in records] == [1, 2]
    for r in records:
        assert len(r["image"]) == 3 and len(r["meta"]["image_sizes"]) == 3
        assert r["conversations"][0]["value"].startswith("<image>\n<image>\n<image>\n")
        assert r["conversations"][0]["value"].count("<image>") == 3


def test_record_format_and_answers_are_strings(clean):
    seen_tasks = set()
    for path, rec in _converted_records(clean["out"]):
        meta = rec["meta"]
        raw = _raw_record(rec)
        names = raw["ImageName"] if isinstance(raw["ImageName"], list) else [raw["ImageName"]]
        images = rec["image"] if isinstance(rec["image"], list) else [rec["image"]]
        assert images == [str(Path(meta["source_file"]).parent / n) for n in names]
        assert all(os.path.isabs(p) for p in images)
        prompt = task_for(meta["task_type"]).prompt(raw["Question"], meta.get("box_format"))
        assert rec["conversations"][0] == {"from": "human", "value": "<image>\n" * len(names) + prompt}
        if meta["task_type"] in ("detection", "instance_detection"):  # the demo's questions say "pixel(s)"
            assert meta["prompt_rule"] == "box_grid_rewrite" and "0-1000 grid" in prompt
            assert "pixel" not in prompt.replace("pixel spacing", "")
        else:
            assert meta["prompt_rule"] == "verbatim" and prompt == raw["Question"]
        assert rec["conversations"][1]["from"] == "gpt"
        answer = rec["conversations"][1]["value"]
        assert isinstance(answer, str)
        assert (meta["image_name"], meta["question"]) == (raw["ImageName"], raw["Question"])
        assert meta["split"] == path.stem.removeprefix(meta["dataset"] + "_")
        assert meta["has_answer"] == (meta["split"] in ("train", "val"))
        assert ("box_format" in meta) == (meta["task_type"] in ("detection", "instance_detection"))
        if not meta["has_answer"]:
            assert answer == ""
            continue
        seen_tasks.add(meta["task_type"])
        task, raw_answer = meta["task_type"], raw["Answer"]
        if task in ("classification", "multi-label classification", "report_generation"):
            assert answer == str(raw_answer).strip() and answer
        elif task == "counting":
            assert answer.isdigit() and int(answer) == int(float(raw_answer))
        elif task == "regression":
            assert float(answer) == float(raw_answer)
    assert seen_tasks == {
        "classification",
        "multi-label classification",
        "detection",
        "instance_detection",
        "counting",
        "regression",
        "report_generation",
    }


def _raw_boxes(raw_answer):
    value = json.loads(raw_answer) if isinstance(raw_answer, str) else raw_answer
    return {"_": value} if isinstance(value, list) else value


def test_grid_boxes_match_pixel_boxes(clean, tmp_path):
    checked = 0
    for _, rec in _converted_records(clean["out"]):
        meta = rec["meta"]
        if meta["task_type"] not in ("detection", "instance_detection") or not meta["has_answer"]:
            continue
        assert meta["box_format"] == "qwen1000"
        w, h = meta["image_sizes"][0]
        assert (w, h) == read_image_size(rec["image"] if isinstance(rec["image"], str) else rec["image"][0])
        grid = _raw_boxes(rec["conversations"][1]["value"])
        pixels = _raw_boxes(_raw_record(rec)["Answer"])
        assert grid.keys() == pixels.keys()
        for key, boxes in grid.items():
            assert len(boxes) == len(pixels[key])
            for g, p in zip(boxes, pixels[key]):
                assert all(isinstance(v, int) and 0 <= v <= 1000 for v in g)
                back = grid_to_pixel(g, w, h)
                assert max(abs(a - b) for a, b in zip(back, p)) <= 1.0
                checked += 1
    assert checked >= 10
    # --box_format pixel keeps the original pixel boxes.
    report = convert(
        clean["raw"], tmp_path, ["BUSI-det", "chromosome", "iugc"], ["train"], "pixel", progress=False
    )
    assert report["settings"]["box_format"] == "pixel"
    for name in ("BUSI-det", "chromosome", "iugc"):
        for rec in _load(tmp_path / f"{name}_train.json"):
            if rec["meta"]["task_type"] in ("detection", "instance_detection"):
                assert rec["meta"]["box_format"] == "pixel"
                assert _raw_boxes(rec["conversations"][1]["value"]) == _raw_boxes(_raw_record(rec)["Answer"])


def test_withgt_appended_to_val_and_hidden_inputs_unlabelled(clean):
    out = clean["out"]
    chestdr = _load(out / "chestdr_val.json")
    folders = [r["meta"]["source_split_folder"] for r in chestdr]
    assert folders == ["validation-public"] * SPS + ["validation-hidden"] * SPS
    assert all(r["meta"]["has_answer"] and r["conversations"][1]["value"] for r in chestdr)
    hidden = [r for r in chestdr if r["meta"]["source_split_folder"] == "validation-hidden"]
    assert {Path(r["meta"]["source_file"]).name for r in hidden} == {"chestdr_questions_val_withGT.json"}
    assert not (out / "chestdr_val_hidden.json").exists()
    entry = clean["report"]["datasets"]["chestdr"]["val"]
    assert [Path(p).name for p in entry["source_files"]] == [
        "chestdr_questions_val.json",
        "chestdr_questions_val_withGT.json",
    ]
    for name in FLARE_DATASETS:
        if name == "chestdr":
            continue
        for rec in _load(out / f"{name}_val_hidden.json"):
            assert rec["meta"]["has_answer"] is False and rec["conversations"][1]["value"] == ""
            assert rec["meta"]["source_split_folder"] == "validation-hidden"
        assert all(
            r["meta"]["source_split_folder"] == "validation-public" for r in _load(out / f"{name}_val.json")
        )


def test_question_file_name_variant(clean):
    entry = clean["report"]["datasets"]["IU_XRay"]["train"]
    assert [Path(p).name for p in entry["source_files"]] == ["IU_XRay_all_train.json"]
    assert entry["converted"] == SPS


def test_awkward_image_modes_converted_not_skipped(clean):
    modes, orientations = set(), set()
    for _, rec in _converted_records(clean["out"]):
        for path, size in zip(
            rec["image"] if isinstance(rec["image"], list) else [rec["image"]], rec["meta"]["image_sizes"]
        ):
            with Image.open(path) as img:
                modes.add(img.mode)
                orientation = img.getexif().get(0x0112)
                orientations.add(orientation)
                shown = ImageOps.exif_transpose(img).size
            assert tuple(size) == shown
            if orientation == 6:
                assert tuple(size) == (img.size[1], img.size[0])
    assert {"I;16", "RGBA", "P", "CMYK", "L", "RGB"} <= modes
    assert 6 in orientations
    for name in ("dental", "fundus", "BUS-UCLM", "bcn20000"):
        assert all(e["skipped"] == 0 for e in clean["report"]["datasets"][name].values())


def test_each_image_decoded_once(clean, tmp_path, monkeypatch):
    calls: list[str] = []

    def counting(path):
        calls.append(path)
        return inspect_image(path)

    monkeypatch.setattr(records, "inspect_image", counting)
    report = convert(clean["raw"], tmp_path, ["iugc", "neojaundice"], ["train"], progress=False)
    assert len(calls) == len(set(calls))
    iugc = _load(tmp_path / "iugc_train.json")
    assert len(iugc) == SPS and len({r["image"] for r in iugc}) == 1  # 3 task types on one image
    assert {r["meta"]["task_type"] for r in iugc} == {"classification", "detection", "regression"}
    assert len(calls) == 1 + 3 * SPS == report["last_run"]["distinct_images_checked"]


def test_subset_run_updates_only_its_entries(clean, tmp_path):
    convert(clean["raw"], tmp_path, STARTER_DATASETS, ["train", "val"], progress=False)
    first = _load(tmp_path / converter.REPORT_NAME)
    report = convert(clean["raw"], tmp_path, ["retino"], ["test"], box_format="pixel", progress=False)
    assert set(report["datasets"]) == set(STARTER_DATASETS)
    assert report["datasets"]["retino"]["test"]["converted"] == SPS
    assert report["datasets"]["retino"]["test"]["box_format"] == "pixel"
    for name in STARTER_DATASETS:
        for split in ("train", "val", "val_hidden"):
            assert report["datasets"][name][split] == first["datasets"][name][split]
    assert report["last_run"]["entries"] == [["retino", "test"]]
    assert report["totals"]["raw"] == first["totals"]["raw"] + SPS


def test_hand_made_tree_skips_and_file_problems(tmp_path):
    raw = tmp_path / "raw"
    busi = raw / "training" / "Ultrasound" / "BUSI-det"
    (busi / "imagesTr").mkdir(parents=True)
    Image.new("L", (200, 100)).save(busi / "imagesTr" / "a.png")
    ok = {
        "TaskType": "Detection",
        "ImageName": "imagesTr/a.png",
        "Question": "Where?",
        "Answer": "[[10, 20, 30, 40]]",
    }
    records = [
        ok,
        {**ok, "Question": "Where else?", "Answer": "somewhere"},  # unparsable_answer
        {**ok, "Question": "Q3", "TaskType": "segmentation"},  # unknown_task_type
        "not a record",  # invalid_record
        {k: v for k, v in ok.items() if k != "Question"},  # invalid_record
        {**ok, "Question": "Q6", "Answer": None},  # empty_answer
        {**ok, "Answer": "[[0, 0, 1, 1]]"},  # duplicate (different answer)
        {**ok, "Question": "Q8", "ImageName": ["imagesTr/a.png", "imagesTr/gone.png"]},  # missing_image
    ]
    (busi / "BUSI-det_questions_train.json").write_text(json.dumps(records))
    test_dir = raw / "testing" / "Ultrasound" / "BUSI-det"
    (test_dir / "imagesTs").mkdir(parents=True)
    Image.new("L", (50, 50)).save(test_dir / "imagesTs" / "t.png")
    blank = {"TaskType": "detection", "ImageName": "imagesTs/t.png", "Question": "Where?", "Answer": ""}
    (test_dir / "any_name.json").write_text(json.dumps([blank, blank, {**blank, "Answer": "[[1, 1, 2, 2]]"}]))
    retino = raw / "training" / "Retinography" / "retino"
    retino.mkdir(parents=True)
    (retino / "one.json").write_text("[]")
    (retino / "two.json").write_text("[]")
    (raw / "validation-public").mkdir()
    (raw / "validation-public" / "notes.txt").write_text("")

    report = convert(raw, tmp_path / "out", ["busi_det", "RETINO"], ["train", "test"], progress=False)
    entry = report["datasets"]["BUSI-det"]["train"]
    assert (entry["raw"], entry["converted"], entry["skipped"]) == (8, 1, 7)
    reasons = {s["source_index"]: s["reason"] for s in report["skipped"]}
    assert reasons == {
        1: "unparsable_answer",
        2: "unknown_task_type",
        3: "invalid_record",
        4: "invalid_record",
        5: "empty_answer",
        6: "duplicate",
        7: "missing_image",
    }
    dup = next(s for s in report["skipped"] if s["reason"] == "duplicate")
    assert dup["detail"] == "repeats record 0 (same ImageName and Question) (with a different answer)"
    # Inference inputs keep repeats (predictions must cover every input) and never carry answers.
    test = report["datasets"]["BUSI-det"]["test"]
    assert (test["raw"], test["converted"], test["answers_ignored"]) == (3, 3, 1)
    assert [r["conversations"][1]["value"] for r in _load(tmp_path / "out" / "BUSI-det_test.json")] == [
        "",
        "",
        "",
    ]
    [ambiguous] = report["datasets"]["retino"]["train"]["file_errors"]
    assert ambiguous["reason"] == "ambiguous_question_file" and "one.json, two.json" in ambiguous["detail"]
    assert report["datasets"]["retino"]["test"]["missing_folders"] == [
        str(raw / "testing" / "Retinography" / "retino")
    ]
    assert not (tmp_path / "out" / "retino_train.json").exists()


def test_atomic_json_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, [1, 2])
    with pytest.raises(TypeError):
        write_json_atomic(target, [object()])
    assert json.loads(target.read_text()) == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_dataset_names_resolved_and_unknown_listed(capsys):
    assert resolve_conversion_datasets(["busi_det", "FLARE_Retino", "Bone_Marrow", "retino"]) == [
        "BUSI-det",
        "retino",
        "bone_marrow",
    ]
    with pytest.raises(SystemExit) as exc:
        cli.main(["--datasets", "retino", "nosuch"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'nosuch'" in err and "BUSI-det" in err and "neurips22cell" in err


def test_missing_input_dir_exits_2_with_path(tmp_path, capsys):
    missing = tmp_path / "no_such_tree"
    assert cli.main(["--input_dir", str(missing), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "<root>/training/<Modality>/<dataset>/" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["--base_dir", str(empty), "--output_dir", str(tmp_path / "out")]) == 2
    assert str(empty) in capsys.readouterr().err
    with pytest.raises(ConversionInputError):
        convert(missing, tmp_path / "out", ["retino"], ["train"], progress=False)


def test_verbose_cli_lists_each_skip(defective, tmp_path, capsys):
    argv = ["--input_dir", str(defective["raw"]), "--output_dir", str(tmp_path), "--verbose", "--no_progress"]
    assert cli.main(argv) == 0  # skips are not fatal
    out = capsys.readouterr().out
    assert "skip retino train retino_questions_train.json[0]" in out and "missing_image" in out
    assert "skip bone_marrow train bone_marrow_questions_train.json[1]" in out and "corrupt_image" in out
    assert f"BUSI-det_questions_train.json[{SPS}]" in out
    assert "endo" not in out  # endo is not a starter dataset


def _run_cli(cwd: Path, script: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, "--datasets", "retino", "neojaundice", "--no_progress"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_from_repo_root_and_from_data_conversion_writes_same_files(clean, tmp_path):
    outputs = {}
    for label, cwd, script in (
        ("root", REPO_ROOT, "data_conversion/convert_flare_to_qwen3vl.py"),
        ("inside", REPO_ROOT / "data_conversion", "convert_flare_to_qwen3vl.py"),
    ):
        out = tmp_path / label
        env = {**os.environ, "FLARE25_ROOT": str(clean["raw"]), "FLARE25_CONVERTED_DIR": str(out)}
        result = _run_cli(cwd, script, env)
        assert result.returncode == 0, result.stderr
        outputs[label] = {
            p.name: p.read_text() for p in out.glob("*.json") if p.name != converter.REPORT_NAME
        }
    assert sorted(outputs["root"]) == [
        "neojaundice_train.json",
        "neojaundice_val.json",
        "neojaundice_val_hidden.json",
        "retino_train.json",
        "retino_val.json",
        "retino_val_hidden.json",
    ]
    assert outputs["root"] == outputs["inside"]
    assert not (REPO_ROOT / "data_conversion" / "converted_data").exists()
