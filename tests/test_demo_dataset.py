"""The demo FLARE25 tree: layout, record counts, answer encodings, image cues, determinism and seeded defects."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps, UnidentifiedImageError

from data_conversion.make_demo_dataset import (
    COUNT_CELL,
    DEMO_DEFECTS,
    DEMO_SPECS,
    GRAY_LEVELS,
    INSTANCE_COLOURS,
    IUGC_MM_PER_PIXEL,
    PALETTE,
    bar_geometry,
    demo_defects,
    make_demo_dataset,
    question_file_name,
)
from qwenvl.flare.datasets import FLARE_DATASETS
from qwenvl.flare.raw import IMAGE_FOLDERS, SPLIT_FOLDERS
from qwenvl.flare.tasks import CLASSIFICATION, normalize_task_type

N = 4  # default samples_per_split
LABELLED = ("training", "validation-public")
UNLABELLED = ("validation-hidden", "testing")
FIELDS = {"TaskType", "Modality", "ImageName", "Question", "Answer", "Split"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict:
    """Clean trees for seed 0 (twice) and seed 1, and a seed-0 tree with defects, with their summaries."""
    out = {}
    for key, seed, defects in (("a", 0, False), ("b", 0, False), ("seed1", 1, False), ("defects", 0, True)):
        root = tmp_path_factory.mktemp(key)
        out[key] = (root, make_demo_dataset(root, seed=seed, with_defects=defects))
    return out


@pytest.fixture(scope="module")
def root(trees) -> Path:
    return trees["a"][0]


def ds_dir(root: Path, dataset: str, split_folder: str) -> Path:
    return root / split_folder / FLARE_DATASETS[dataset].modality / dataset


def load(root: Path, dataset: str, split_folder: str) -> list[dict]:
    path = ds_dir(root, dataset, split_folder) / question_file_name(dataset, split_folder)
    return json.loads(path.read_text(encoding="utf-8"))


def names(record: dict) -> list[str]:
    return [record["ImageName"]] if isinstance(record["ImageName"], str) else record["ImageName"]


def image_array(root: Path, dataset: str, split_folder: str, name: str) -> np.ndarray:
    return np.asarray(Image.open(ds_dir(root, dataset, split_folder) / name))


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def labelled_records(root: Path, dataset: str):
    for split_folder in LABELLED:
        for idx, rec in enumerate(load(root, dataset, split_folder)):
            yield split_folder, idx, rec


# ---------------------------------------------------------------------------------------------------------------
# Layout and records
# ---------------------------------------------------------------------------------------------------------------


def test_tree_layout_and_file_names(root):
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        SPLIT_FOLDERS.values()
    )
    for name, cfg in FLARE_DATASETS.items():
        for split_folder, image_folder in IMAGE_FOLDERS.items():
            folder = root / split_folder / cfg.modality / name
            entries = sorted(p.name for p in folder.iterdir())
            suffix = {"training": "train", "testing": "test"}.get(split_folder, "val")
            expected = [f"{name}_questions_{suffix}.json", image_folder]
            if name == "IU_XRay" and split_folder == "training":
                expected = ["IU_XRay_all_train.json", image_folder]
            if name == "chestdr" and split_folder == "validation-hidden":
                expected = ["chestdr_questions_val.json", "chestdr_questions_val_withGT.json", image_folder]
            assert entries == sorted(expected), (name, split_folder)
    assert len(list(root.rglob("*.json"))) == 19 * 4 + 1


def test_exact_record_counts_and_summary(trees, root):
    summary = trees["a"][1]
    assert summary["records"] == {name: dict.fromkeys(SPLIT_FOLDERS.values(), N) for name in FLARE_DATASETS}
    assert summary["question_files"] == 77
    assert summary["defects"] == []
    n_images = sum(1 for p in root.rglob("images*/*") if p.is_file())
    assert summary["images"] == n_images
    for name in FLARE_DATASETS:
        for split_folder in SPLIT_FOLDERS.values():
            assert len(load(root, name, split_folder)) == N


def test_record_fields_task_types_and_modality_text(root):
    raw_task_types, modality_texts = set(), set()
    for name, cfg in FLARE_DATASETS.items():
        for split_folder in SPLIT_FOLDERS.values():
            split = {"training": "train", "testing": "test"}.get(split_folder, "val")
            for rec in load(root, name, split_folder):
                assert set(rec) == FIELDS
                assert rec["Split"] == split
                assert normalize_task_type(rec["TaskType"]) in cfg.task_types
                raw_task_types.add(rec["TaskType"])
                modality_texts.add(rec["Modality"])
                for image_name in names(rec):
                    assert image_name.startswith(IMAGE_FOLDERS[split_folder] + "/")
    assert raw_task_types == {
        "Classification",
        "classification",
        "Multi-label Classification",
        "Detection",
        "detection",
        "Instance_Detection",
        "Counting",
        "Regression",
        "regression",
        "Report_Generation",
    }
    assert {"Digital Camera", "Dermoscopy", "microscopy"} <= modality_texts
    assert modality_texts - set(
        FLARE_DATASETS[n].modality for n in FLARE_DATASETS
    )  # free text, not the folder


def test_answers_empty_exactly_in_hidden_and_test(root):
    for name in FLARE_DATASETS:
        for split_folder in LABELLED:
            assert all(rec["Answer"] not in ("", None) for rec in load(root, name, split_folder)), name
        for split_folder in UNLABELLED:
            assert [rec["Answer"] for rec in load(root, name, split_folder)] == [""] * N, name
    folder = ds_dir(root, "chestdr", "validation-hidden")
    public = json.loads((folder / "chestdr_questions_val.json").read_text())
    with_gt = json.loads((folder / "chestdr_questions_val_withGT.json").read_text())
    assert [{**r, "Answer": ""} for r in with_gt] == public
    assert all(re.fullmatch(r"[AB]|[a-z ]+(, [a-z ]+)*", r["Answer"]) for r in with_gt)


def test_every_image_referenced_exists_and_none_is_orphaned(root):
    for name in FLARE_DATASETS:
        for split_folder, image_folder in IMAGE_FOLDERS.items():
            folder = ds_dir(root, name, split_folder)
            referenced = {n for rec in load(root, name, split_folder) for n in names(rec)}
            on_disk = {f"{image_folder}/{p.name}" for p in (folder / image_folder).iterdir()}
            assert referenced == on_disk, (name, split_folder)


def test_multi_image_counts_and_shared_iugc_images(root):
    for split_folder in SPLIT_FOLDERS.values():
        assert [len(rec["ImageName"]) for rec in load(root, "neojaundice", split_folder)] == [3] * N
        for name in ("IU_XRay", "CMMD", "endo"):
            counts = [len(names(rec)) for rec in load(root, name, split_folder)]
            assert counts == [1, 2, 1, 2], (name, counts)
            assert all(
                isinstance(r["ImageName"], str) for r in load(root, name, split_folder) if len(names(r)) == 1
            )
        iugc = load(root, "iugc", split_folder)
        assert [normalize_task_type(r["TaskType"]) for r in iugc] == [
            "classification",
            "detection",
            "regression",
            "classification",
        ]
        assert iugc[0]["ImageName"] == iugc[1]["ImageName"] == iugc[2]["ImageName"] != iugc[3]["ImageName"]


# ---------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------


def _image_facts(root: Path) -> list[tuple[str, str, str, tuple[int, int], int | None]]:
    """(dataset, PIL format, mode, size, EXIF orientation) of every image, fully decoded."""
    facts = []
    for name in FLARE_DATASETS:
        for path in sorted(root.rglob(f"*/{name}/images*/*")):
            with Image.open(path) as im:
                im.load()
                facts.append((name, im.format, im.mode, im.size, im.getexif().get(0x0112)))
    return facts


@pytest.mark.parametrize("samples", [N, 1])
def test_awkward_but_valid_image_modes_present(tmp_path, root, samples):
    tree = root if samples == N else tmp_path
    if samples != N:
        make_demo_dataset(tree, samples_per_split=samples)
    facts = _image_facts(tree)
    kinds = {(fmt, mode) for _, fmt, mode, _, _ in facts}
    assert {("PNG", "I;16"), ("PNG", "RGBA"), ("PNG", "P"), ("JPEG", "CMYK")} <= kinds
    assert {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L")} <= kinds
    exif6 = {name for name, _, _, _, orientation in facts if orientation == 6}
    assert exif6 and all(FLARE_DATASETS[n].task_types == (CLASSIFICATION,) for n in exif6)
    assert {n for n, *_, o in facts if o not in (None, 1)} == exif6
    # 16-bit dental X-rays: dark background below 128, drawn cue at 1000..4000, values spanning 0..4000
    dental = [np.asarray(Image.open(p)) for p in sorted(tree.rglob("*/Xray/dental/images*/*.png"))]
    assert len(dental) == 4 * samples and all(a.dtype == np.uint16 for a in dental)
    assert all(a.min() < 128 and a.max() >= 1000 for a in dental)
    assert min(a.min() for a in dental) == 0 and max(a.max() for a in dental) == 4000


def test_image_sizes_varied_and_not_square(root):
    sizes = [size for *_, size, _ in _image_facts(root)]
    assert all(w != h for w, h in sizes)
    sides = [s for size in sizes for s in size]
    assert min(sides) >= 96 and max(sides) <= 640
    assert min(sides) < 130 and max(sides) > 500


def test_exif_rotated_image_is_stored_sideways(root):
    path = ds_dir(root, "fundus", "training") / load(root, "fundus", "training")[0]["ImageName"]
    with Image.open(path) as im:
        assert im.getexif()[0x0112] == 6
        upright = ImageOps.exif_transpose(im)
        assert upright.size == (im.size[1], im.size[0])


# ---------------------------------------------------------------------------------------------------------------
# Answers and the signal in the images
# ---------------------------------------------------------------------------------------------------------------

OPTION_PATTERNS = {
    "colon": re.compile(r"(?:^|\s)([A-J]): "),
    "dot": re.compile(r"(?:^|\s)([A-J])\. "),
    "paren": re.compile(r"(?:^|\s)([A-J])\) "),
}


def _options(question: str) -> tuple[str, list[str]]:
    """(style, option letters) of a classification question."""
    for style, pattern in OPTION_PATTERNS.items():
        letters = pattern.findall(question)
        if len(letters) >= 2:
            return style, letters
    raise AssertionError(f"no options in {question!r}")


def test_classification_questions_styles_and_balanced_letters(root):
    styles = set()
    for name, spec in DEMO_SPECS.items():
        if CLASSIFICATION not in FLARE_DATASETS[name].task_types:
            continue
        questions = set()
        for _, _, rec in labelled_records(root, name):
            if normalize_task_type(rec["TaskType"]) != CLASSIFICATION:
                continue
            style, letters = _options(rec["Question"])
            styles.add(style)
            questions.add(rec["Question"])
            assert letters == list("ABCDEFGHIJ"[: len(spec.labels)])
            assert rec["Answer"] in letters
        assert len(questions) == 1, name  # one fixed option order per dataset
    assert styles == {"colon", "dot", "paren"}
    question = load(root, "bone_marrow", "training")[0]["Question"]
    assert (
        question.startswith("Question: ")
        and "Options: A: Normal B: Myelofibrosis C: Acute myeloid" in question
    )
    # labels spread evenly: two-class datasets have each letter twice in a 4-record file
    for split_folder in SPLIT_FOLDERS.values():
        if split_folder in LABELLED:
            assert sorted(r["Answer"] for r in load(root, "CMMD", split_folder)) == ["A", "A", "B", "B"]
            assert len({r["Answer"] for r in load(root, "retino", split_folder)}) == 4


@pytest.mark.parametrize("dataset", ["retino", "fundus", "bone_marrow", "endo"])
def test_classification_colour_cue_matches_answer(root, dataset):
    for split_folder, _, rec in labelled_records(root, dataset):
        k = "ABCDEFG".index(rec["Answer"])
        for image_name in names(rec):
            with Image.open(ds_dir(root, dataset, split_folder) / image_name) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
            hits = [int((np.abs(rgb - np.array(c)).max(axis=-1) < 45).sum()) for c in PALETTE]
            assert int(np.argmax(hits)) == k and hits[k] > 100, (dataset, image_name, hits)


def test_bcn20000_texture_matches_answer_and_only_native_resolution_shows_it(root):
    """The resolution test: class k is texture k (2-pixel period) inside a lesion whose mean colour is the
    same for every class, so the class shows at native size and is averaged away at a quarter of it."""
    dark, light = DEMO_SPECS["bcn20000"].extra["texture"]
    means = []
    for split_folder, _, rec in labelled_records(root, "bcn20000"):
        k = "ABC".index(rec["Answer"])
        with Image.open(ds_dir(root, "bcn20000", split_folder) / names(rec)[0]) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
        lesion = np.abs(rgb - np.array(dark)).max(axis=-1) < 40  # the dark texture pixels
        assert lesion.sum() > 500
        ys, xs = np.nonzero(lesion)
        # neighbours of a dark pixel: dark along the texture's lines, light across them
        right = lesion[ys, np.minimum(xs + 1, rgb.shape[1] - 1)].mean()
        below = lesion[np.minimum(ys + 1, rgb.shape[0] - 1), xs].mean()
        assert (right > 0.8, below > 0.8) == [(True, False), (False, True), (False, False)][k], (right, below)
        box = rgb[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        means.append(box.mean())
        small = Image.fromarray(box.astype(np.uint8)).resize(
            (box.shape[1] // 4, box.shape[0] // 4), Image.BOX
        )
        # at a quarter of the size no line survives: neighbouring pixels differ far less than dark vs light
        assert np.abs(np.diff(np.asarray(small, dtype=np.float64), axis=0)).mean() < 20
    assert max(means) - min(means) < 25  # the mean colour does not give the class away


def test_neojaundice_tint_matches_answer(root):
    tints = DEMO_SPECS["neojaundice"].extra["tints"]
    for split_folder, _, rec in labelled_records(root, "neojaundice"):
        for image_name in rec["ImageName"]:
            mean = image_array(root, "neojaundice", split_folder, image_name).reshape(-1, 3).mean(axis=0)
            nearest = int(np.argmin([np.abs(mean - np.array(t)).sum() for t in tints]))
            assert "AB"[nearest] == rec["Answer"]


@pytest.mark.parametrize(("dataset", "separator"), [("periapical", ";"), ("chestdr", ", ")])
def test_multilabel_answers_are_label_names_with_drawn_cues(root, dataset, separator):
    seen = 0
    for split_folder, _, rec in labelled_records(root, dataset):
        if normalize_task_type(rec["TaskType"]) != "multi-label classification":
            continue
        seen += 1
        options = rec["Question"].split("Options: ")[1].split(". List")[0].split(", ")
        assert any(" " in o for o in options)  # multi-word labels exist
        present = rec["Answer"].split(separator)
        assert present and all(p in options for p in present), rec["Answer"]
        assert present == [o for o in options if o in present]  # fixed label order
        if dataset == "periapical":  # PNG: the label cues' gray levels are exact
            pixels = image_array(root, dataset, split_folder, rec["ImageName"])
            drawn = [o for j, o in enumerate(options) if (pixels == GRAY_LEVELS[j]).sum() > 20]
            assert drawn == present
    assert seen == (2 * N if dataset == "periapical" else N)


def _check_boxes_tight(pixels: np.ndarray, boxes: list[list[int]], bright: np.ndarray, tol: int) -> None:
    h, w = pixels.shape[:2]
    union = np.zeros((h, w), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        assert all(isinstance(v, int) for v in (x1, y1, x2, y2))
        assert 0 <= x1 < x2 < w and 0 <= y1 < y2 < h
        ys, xs = np.nonzero(bright[y1 : y2 + 1, x1 : x2 + 1])
        got = [x1 + xs.min(), y1 + ys.min(), x1 + xs.max(), y1 + ys.max()]
        assert max(abs(a - b) for a, b in zip(got, (x1, y1, x2, y2))) <= tol, (got, [x1, y1, x2, y2])
        union[max(0, y1 - tol) : y2 + tol + 1, max(0, x1 - tol) : x2 + tol + 1] = True
    assert not (bright & ~union).any()  # no bright object outside the boxes


@pytest.mark.parametrize(
    ("dataset", "threshold", "tol"), [("BUSI-det", 200, 0), ("BUS-UCLM-det", 160, 2), ("iugc", 200, 0)]
)
def test_detection_boxes_surround_bright_objects(root, dataset, threshold, tol):
    n_boxes = []
    for split_folder, _, rec in labelled_records(root, dataset):
        if normalize_task_type(rec["TaskType"]) != "detection":
            continue
        assert isinstance(rec["Answer"], str)
        boxes = json.loads(rec["Answer"])
        n_boxes.append(len(boxes))
        pixels = image_array(root, dataset, split_folder, rec["ImageName"])
        _check_boxes_tight(pixels, boxes, pixels >= threshold, tol)
    assert all(1 <= n <= 3 for n in n_boxes) and len(n_boxes) == (2 * N if dataset != "iugc" else 2)


def test_chromosome_boxes_surround_objects_of_their_instance_colour(root):
    for split_folder, _, rec in labelled_records(root, "chromosome"):
        answer = json.loads(rec["Answer"])
        assert isinstance(answer, dict) and len(answer) >= 2
        assert list(answer) == sorted(answer, key=int) and set(answer) <= set(INSTANCE_COLOURS)
        pixels = image_array(root, "chromosome", split_folder, rec["ImageName"])
        for instance_id, colour in INSTANCE_COLOURS.items():
            mask = (pixels == np.array(colour)).all(axis=-1)
            if instance_id in answer:
                _check_boxes_tight(pixels, answer[instance_id], mask, 0)
            else:
                assert not mask.any()


def test_counting_answer_equals_drawn_dots(root):
    types = []
    for split_folder, _, rec in labelled_records(root, "neurips22cell"):
        types.append(type(rec["Answer"]))
        pixels = image_array(root, "neurips22cell", split_folder, rec["ImageName"])
        h, w = pixels.shape[:2]
        rows, cols = h // COUNT_CELL, w // COUNT_CELL
        bright = pixels[: rows * COUNT_CELL, : cols * COUNT_CELL, 1] > 150
        assert (
            not pixels[rows * COUNT_CELL :, :, 1].max() > 150
            and not pixels[:, cols * COUNT_CELL :, 1].max() > 150
        )
        cells = bright.reshape(rows, COUNT_CELL, cols, COUNT_CELL).any(axis=(1, 3))
        assert int(rec["Answer"]) == int(cells.sum()) >= 5
    assert types == [int, str, int, str] * 2  # a JSON number in some records, a string in others


def test_boneresorption_bar_length_is_the_percentage(root):
    types = []
    for split_folder, _, rec in labelled_records(root, "boneresorption"):
        types.append(type(rec["Answer"]))
        pct = float(rec["Answer"])
        assert 5 <= pct <= 95
        pixels = image_array(root, "boneresorption", split_folder, rec["ImageName"]).astype(int)
        x0, length = bar_geometry(pixels.shape[1])
        cols = np.nonzero((pixels > 200).sum(axis=0) >= 4)[0]
        assert abs(cols.min() - x0) <= 1
        assert abs((cols.max() - cols.min() + 1) / length * 100 - pct) < 1.5
    assert types == [float, str, float, str] * 2


def test_iugc_regression_is_the_caliper_distance(root):
    seen = 0
    for split_folder, _, rec in labelled_records(root, "iugc"):
        if normalize_task_type(rec["TaskType"]) != "regression":
            continue
        seen += 1
        p = image_array(root, "iugc", split_folder, rec["ImageName"]) == 140
        centre = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        ys, xs = np.nonzero(centre)
        assert len(ys) == 2
        distance = math.dist((xs[0], ys[0]), (xs[1], ys[1])) * IUGC_MM_PER_PIXEL
        assert float(rec["Answer"]) == round(distance, 1)
    assert seen == 2


def test_iu_xray_report_sentences_follow_visible_cues(root):
    for split_folder, _, rec in labelled_records(root, "IU_XRay"):
        report = rec["Answer"]
        assert report.startswith("Findings: ") and "Impression: " in report
        assert report.count(". ") >= 4
        frontal = image_array(root, "IU_XRay", split_folder, names(rec)[0])
        assert ("left pleural effusion." in report) == bool((frontal == 210).sum() > 20)
        assert ("There is a nodule" in report) == bool((frontal == 235).sum() > 5)
        assert ("heart is enlarged" in report) != ("heart size is normal" in report)


# ---------------------------------------------------------------------------------------------------------------
# Determinism, defects, CLI
# ---------------------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_other_seed_differs(trees):
    a, b, other = (file_hashes(trees[k][0]) for k in ("a", "b", "seed1"))
    assert len(a) == 352 + 77 + 1  # images + question files + marker
    assert a == b
    assert set(other) == set(a)
    changed = [p for p in a if a[p] != other[p]]
    assert len(changed) > 0.9 * len(a)


def test_defects_are_exactly_the_listed_ones(trees):
    clean_root, defect_root = trees["a"][0], trees["defects"][0]
    summary = trees["defects"][1]
    assert summary["defects"] == DEMO_DEFECTS == demo_defects(N)
    assert summary["records"]["BUSI-det"]["training"] == N + 1
    clean, dirty = file_hashes(clean_root), file_hashes(defect_root)
    tr = "training"

    def rel(dataset: str, name: str) -> str:
        return str(ds_dir(clean_root, dataset, tr).relative_to(clean_root) / name)

    retino = load(clean_root, "retino", tr)
    marrow = load(clean_root, "bone_marrow", tr)
    neo = load(clean_root, "neojaundice", tr)
    missing = {rel("retino", retino[0]["ImageName"]), rel("neojaundice", neo[0]["ImageName"][1])}
    val = "validation-public"
    iugc_val = ds_dir(clean_root, "iugc", val).relative_to(clean_root)
    changed = {
        rel("bone_marrow", marrow[1]["ImageName"]),
        rel("boneresorption", "boneresorption_questions_train.json"),
        rel("BUSI-det", "BUSI-det_questions_train.json"),
        rel("endo", "endo_questions_train.json"),
        rel("CMMD", "CMMD_questions_train.json"),
        str(ds_dir(clean_root, "endo", val).relative_to(clean_root) / "endo_questions_val.json"),
        str(iugc_val / "iugc_questions_val.json"),
        str(iugc_val / "imagesVal" / "iugc_0000.png"),
        ".flare25_demo",
    }
    assert set(clean) - set(dirty) == missing and set(dirty) <= set(clean)
    assert {p for p in dirty if dirty[p] != clean[p]} == changed

    # 1 + 3: the other images of those records are still there
    assert all((ds_dir(defect_root, "neojaundice", tr) / n).is_file() for n in neo[0]["ImageName"][::2])
    # 2: 200 random bytes that do not decode
    corrupt = ds_dir(defect_root, "bone_marrow", tr) / marrow[1]["ImageName"]
    assert corrupt.stat().st_size == 200
    with pytest.raises(UnidentifiedImageError):
        Image.open(corrupt)
    # 4: empty answer on record 0 only
    bone = load(defect_root, "boneresorption", tr)
    assert bone[0]["Answer"] == "" and all(r["Answer"] != "" for r in bone[1:])
    assert [{**r, "Answer": ""} for r in bone] == [
        {**r, "Answer": ""} for r in load(clean_root, "boneresorption", tr)
    ]
    # 5: record 0 copied to index N
    busi = load(defect_root, "BUSI-det", tr)
    assert len(busi) == N + 1 and busi[N] == busi[0] and busi[:N] == load(clean_root, "BUSI-det", tr)
    # 6: truncated to its first 40% of bytes, not valid JSON
    name = "endo_questions_train.json"
    full = (ds_dir(clean_root, "endo", tr) / name).read_bytes()
    cut = (ds_dir(defect_root, "endo", tr) / name).read_bytes()
    assert cut == full[: int(len(full) * 0.4)]
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut)
    # 7: several letters on a single-label question; 8: an answer that is no offered letter
    cmmd, cmmd_clean = load(defect_root, "CMMD", tr), load(clean_root, "CMMD", tr)
    assert cmmd[0]["Answer"] == "A B" and cmmd[1:] == cmmd_clean[1:]
    endo, endo_clean = load(defect_root, "endo", val), load(clean_root, "endo", val)
    assert endo[0]["Answer"] == "T" and endo[1:] == endo_clean[1:]
    assert [{**r, "Answer": ""} for r in endo] == [{**r, "Answer": ""} for r in endo_clean]
    # 9: iugc's validation image 0 holds the bytes of its training image 0, and its three records (one per
    # task type) the training answers; the other records are untouched
    leak = summary["defects"][-1]
    assert leak == {
        "dataset": "iugc",
        "split_folder": val,
        "file": "imagesVal/iugc_0000.png",
        "records": [0, 1, 2],
        "reason": "train_val_leak",
    }
    iugc_train, iugc_v, iugc_clean = (
        load(defect_root, "iugc", tr),
        load(defect_root, "iugc", val),
        load(clean_root, "iugc", val),
    )
    assert (ds_dir(defect_root, "iugc", val) / leak["file"]).read_bytes() == (
        ds_dir(defect_root, "iugc", tr) / iugc_train[0]["ImageName"]
    ).read_bytes()
    assert {r["ImageName"] for r in iugc_v[:3]} == {leak["file"]}
    assert [r["Answer"] for r in iugc_v[:3]] == [r["Answer"] for r in iugc_train[:3]]
    assert [r["Question"] for r in iugc_v[:3]] == [r["Question"] for r in iugc_train[:3]]
    assert iugc_v[3:] == iugc_clean[3:]


def test_defects_need_two_samples_and_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="samples_per_split >= 2"):
        make_demo_dataset(tmp_path / "x", samples_per_split=1, with_defects=True)
    with pytest.raises(ValueError, match="at least 1"):
        make_demo_dataset(tmp_path / "y", samples_per_split=0)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_refuses_foreign_folder_and_replaces_its_own_tree(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not written by make_demo_dataset"):
        make_demo_dataset(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]

    demo = tmp_path / "demo"
    make_demo_dataset(demo, samples_per_split=3, with_defects=True)
    make_demo_dataset(demo, samples_per_split=2)  # a smaller, clean tree: no stale files or defects remain
    assert (
        sum(1 for p in demo.rglob("images*/*")) == json.loads((demo / ".flare25_demo").read_text())["images"]
    )
    assert len(load(demo, "BUSI-det", "training")) == 2
    assert len(load(demo, "endo", "training")) == 2


def test_cli_runs_from_inside_data_conversion(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "make_demo_dataset.py",
            "--output_dir",
            str(out),
            "--samples_per_split",
            "2",
            "--with_defects",
        ],
        cwd=REPO / "data_conversion",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "77 question files, 153 records" in proc.stdout
    assert (
        "9 seeded defects" in proc.stdout
        and "endo/training endo_questions_train.json: unreadable_file" in proc.stdout
        and "endo/validation-public record 0: answer_not_an_option" in proc.stdout
        and "iugc/validation-public imagesVal/iugc_0000.png: train_val_leak" in proc.stdout
    )
    assert len(load(out, "BUSI-det", "training")) == 3
