"""report.html: written by every evaluation, self-contained, with the right metric values, confusion counts,
gallery order and escaping; boxes drawn in the right colours at the right pixels; and a real headless browser
renders it (where chromium is installed)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from qwenvl.eval.evaluate import evaluate_records
from qwenvl.eval.html_report import collect_samples, comparison_rows, confusion_counts, worst_first
from qwenvl.eval.report_images import GT_COLOUR, PRED_COLOUR, draw_boxes, thumbnail
from qwenvl.flare.runfiles import EVAL_REPORT_HTML

QUESTION = "Which lesion is it? <script>alert(1)</script> & co Options: A: Nevus B: Melanoma C: Other"
BACKGROUND = (90, 90, 90)


# ------------------------------------------------------------------------------------------------ helpers
def _record(tmp: Path, dataset: str, task: str, k: int, answer: str, size=(200, 100), **meta) -> dict:
    image = tmp / f"{dataset}_{k}.png"
    Image.new("RGB", size, BACKGROUND).save(image)
    question = meta.pop("question", f"Question {k} about {dataset}?")
    return {
        "image": str(image),
        "conversations": [
            {"from": "human", "value": "<image>\n" + question},
            {"from": "gpt", "value": answer},
        ],
        "meta": {
            "dataset": dataset,
            "task_type": task,
            "modality": "Test",
            "split": "val",
            "source_file": str(tmp / "gone.json"),  # not there: the challenge record is rebuilt from meta
            "source_index": k,
            "image_name": f"images/{dataset}_{k}.png",
            "question": question,
            "image_sizes": [list(size)],
            "has_answer": True,
            **meta,
        },
    }


def _records(tmp: Path) -> list[dict]:
    """4 classification records (truth A, B, B, C), 2 detection records on the 0-1000 grid (a 200 x 100
    image: grid [100, 100, 300, 500] is pixels [20, 10, 60, 50]) and 2 counting records (10 and 20)."""
    derm = [_record(tmp, "derm", "classification", k, a, question=QUESTION) for k, a in enumerate("ABBC")]
    grid_box = "[[100, 100, 300, 500]]"
    det = [_record(tmp, "lesions", "detection", k, grid_box, box_format="qwen1000") for k in range(2)]
    cells = [_record(tmp, "cells", "counting", k, a) for k, a in enumerate(["10", "20"])]
    return derm + det + cells


NOISY = ["A", "A", "B", "no idea", "[[100, 100, 300, 500]]", "[[600, 600, 900, 900]]", "12", "50"]


def _fixed(answers):
    return lambda records: list(answers)


def _echo(records):
    return [r["conversations"][-1]["value"] for r in records]


class _Tables(HTMLParser):
    """Every table of a page fragment as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _sections(page: str) -> dict[str, str]:
    """The dataset sections of a report, by their heading's first word."""
    parts = re.split(r"<h2 id='ds-\d+'>", page)[1:]
    return {part.split(" ", 1)[0]: part for part in parts}


def _tables(fragment: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(fragment)
    return parser.tables


def _images(fragment: str) -> list[Image.Image]:
    uris = re.findall(r"src='data:image/jpeg;base64,([A-Za-z0-9+/=]+)'", fragment)
    return [Image.open(io.BytesIO(base64.b64decode(u))).convert("RGB") for u in uris]


def _close(pixel, colour, tolerance=60) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


# -------------------------------------------------------------------------------------------- the report
def test_evaluation_writes_a_self_contained_report_with_values_counts_and_samples(tmp_path):
    result = evaluate_records(_records(tmp_path), _fixed(NOISY), tmp_path / "noisy", {"model_path": "m/x"})
    assert EVAL_REPORT_HTML in result.files
    page = (tmp_path / "noisy" / EVAL_REPORT_HTML).read_text(encoding="utf-8")

    assert "http" not in page  # nothing to fetch: no URL at all
    assert re.findall(r"src='([a-z]+):", page) == ["data"] * 8  # every image inline, one per sample
    assert "<script" not in page
    assert "Which lesion is it? &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page

    sections = _sections(page)
    assert list(sections) == ["derm", "lesions", "cells"]
    derm, lesions, cells = (_tables(sections[k]) for k in ("derm", "lesions", "cells"))
    assert derm[0] == [
        ["n", "balanced_accuracy", "accuracy", "n_unparsable", "n_missing"],
        ["4", "0.5000", "0.5000", "1", "0"],  # recalls A 1/1, B 1/2, C 0/1
    ]
    assert derm[1] == [  # the confusion matrix: truth x prediction
        ["truth \\ predicted", "a", "b", "c", "unparsable", "total"],  # the challenge's normalised strings
        ["a", "1", "", "", "", "1"],
        ["b", "1", "1", "", "", "2"],
        ["c", "", "", "", "1", "1"],
    ]
    assert lesions[0][1][:7] == ["2", "0.5000", "0.5000", "0.5000", "1", "1", "1"]  # n f1 p r tp fp fn
    assert cells[0][1][:2] == ["2", "16.0000"]  # |12 - 10| and |50 - 20|
    assert len(lesions) == len(cells) == 1  # no confusion matrix where the metric is not balanced accuracy

    # Galleries, worst first: unparsable, then misclassified, then right; the larger count error first.
    assert re.findall(r"#(\d+) &middot;", sections["derm"]) == ["3", "1", "0", "2"]
    assert re.findall(r"#(\d+) &middot;", sections["cells"]) == ["7", "6"]
    assert "B: Melanoma" in sections["derm"]  # option text beside the letter
    assert [len(_images(s)) for s in sections.values()] == [4, 2, 2]

    # The missed detection (#5, worst first) shows the truth at pixels [20, 10, 60, 50] in green and the
    # prediction (grid [600, 600, 900, 900] = pixels [120, 60, 180, 90]) in magenta, on a 1.6x thumbnail.
    missed = _images(sections["lesions"])[0]
    assert missed.size == (320, 160)
    assert _close(missed.getpixel((33, 48)), GT_COLOUR)  # left edge of the truth box
    assert _close(missed.getpixel((193, 98)), PRED_COLOUR)  # left edge of the prediction, first dash
    assert _close(missed.getpixel((64, 48)), BACKGROUND)  # inside the truth box: untouched
    assert "legend" in sections["lesions"] and "legend" not in sections["derm"]


def test_report_compares_with_another_run_and_colours_the_deltas(tmp_path):
    records = _records(tmp_path)
    evaluate_records(records, _fixed(NOISY), tmp_path / "noisy")
    evaluate_records(records, _echo, tmp_path / "perfect", compare_dir=tmp_path / "noisy")
    page = (tmp_path / "perfect" / EVAL_REPORT_HTML).read_text(encoding="utf-8")
    assert "Comparison: perfect vs noisy" in page
    table = _tables(page.split("id='comparison'")[1].split("<h2")[0])[0]
    rows = {row[0]: row[1:] for row in table[1:]}
    assert rows["derm"] == ["balanced_accuracy", "1.0000", "0.5000", "+0.5000"]
    assert rows["cells"] == ["mae", "0.0000", "16.0000", "-16.0000"]
    assert rows["all detection"] == ["f1", "1.0000", "0.5000", "+0.5000"]
    assert '<td class="num better">-16.0000</td>' in page  # a lower error is better
    assert '<td class="num better">+0.5000</td>' in page

    evaluate_records(records, _fixed(NOISY), tmp_path / "again", compare_dir=tmp_path / "perfect")
    again = (tmp_path / "again" / EVAL_REPORT_HTML).read_text(encoding="utf-8")
    assert '<td class="num worse">+16.0000</td>' in again and '<td class="num worse">-0.5000</td>' in again


def test_unlabelled_records_get_a_gallery_in_input_order_and_the_limit_holds(tmp_path):
    records = _records(tmp_path)
    for r in records:
        r["meta"]["has_answer"] = False
        r["conversations"][-1]["value"] = ""
    result = evaluate_records(records, _fixed(NOISY), tmp_path / "test", report_samples=1)
    assert result.metrics is None and EVAL_REPORT_HTML in result.files
    page = (tmp_path / "test" / EVAL_REPORT_HTML).read_text(encoding="utf-8")
    assert "not scored" in page and "Ground truth" not in page and "Confusion" not in page
    sections = _sections(page)
    assert [re.findall(r"#(\d+) &middot;", s) for s in sections.values()] == [["0"], ["4"], ["6"]]
    assert "Samples: 1 of 4, in input order" in sections["derm"]
    box = _images(sections["lesions"])[0]  # the prediction alone, pixels [20, 10, 60, 50] x 1.6
    assert _close(box.getpixel((33, 20)), PRED_COLOUR) and _close(box.getpixel((64, 48)), BACKGROUND)

    bare = evaluate_records(records, _fixed(NOISY), tmp_path / "bare", report_samples=0)
    assert "<img" not in (bare.output_dir / EVAL_REPORT_HTML).read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="report_samples"):
        evaluate_records(records, _fixed(NOISY), tmp_path / "bad", report_samples=-1)


def test_ranking_confusion_and_comparison_rows_on_their_own(tmp_path):
    result = evaluate_records(_records(tmp_path), _fixed(NOISY), tmp_path / "e")
    samples = collect_samples(_records(tmp_path), result.outputs, result.predictions, ["derm", "cells"])
    derm = [s for s in samples if s.group == "derm"]
    labels, counts = confusion_counts(derm)
    assert labels == ["a", "b", "c"]
    assert counts == {("a", "a"): 1, ("b", "a"): 1, ("b", "b"): 1, ("c", "unparsable"): 1}
    assert [s.output.index for s in worst_first(derm)] == [3, 1, 0, 2]  # unparsable, wrong, right
    assert [s.output.index for s in worst_first(samples[4:6])] == [5, 4]  # f1 0, then f1 1
    assert [s.output.index for s in worst_first(samples[6:])] == [7, 6]  # error 30, then error 2
    assert [s.score for s in samples[6:]] == [2.0, 30.0]

    this = {"by_dataset": {"cells": {"task_type": "counting", "mae": 1.0}}}
    other = {"by_dataset": {"derm": {"task_type": "classification", "balanced_accuracy": 0.5}}}
    assert comparison_rows(this, other) == [
        ("cells", "mae", False, 1.0, None),
        ("derm", "balanced_accuracy", True, None, 0.5),
    ]


# ------------------------------------------------------------------------------------------------- boxes
def test_boxes_are_drawn_in_their_colours_at_their_pixels():
    image = Image.new("RGB", (100, 80), BACKGROUND)
    out = draw_boxes(image, [[10, 10, 50, 40]], [[60, 20, 90, 70]])
    assert image.getpixel((10, 25)) == BACKGROUND  # the input is not drawn on
    assert out.getpixel((10, 25)) == out.getpixel((11, 25)) == GT_COLOUR  # 2 px left edge, inside the box
    assert out.getpixel((30, 10)) == out.getpixel((50, 30)) == out.getpixel((30, 40)) == GT_COLOUR
    assert out.getpixel((9, 25)) == out.getpixel((12, 25)) == out.getpixel((30, 25)) == BACKGROUND
    assert out.getpixel((60, 21)) == out.getpixel((75, 70)) == out.getpixel((90, 20)) == PRED_COLOUR
    assert out.getpixel((60, 27)) == BACKGROUND  # a gap between dashes (6 on, 4 off from the corner)
    assert out.getpixel((75, 45)) == BACKGROUND

    # A 400 x 200 image fitted into 200 px: the box [100, 50, 300, 150] lands on [50, 25, 150, 75].
    small = thumbnail(Image.new("RGB", (400, 200), BACKGROUND), 200, [[100, 50, 300, 150]], [])
    assert small.size == (200, 100)
    assert small.getpixel((50, 50)) == small.getpixel((150, 50)) == small.getpixel((100, 25)) == GT_COLOUR
    assert small.getpixel((48, 50)) == small.getpixel((100, 50)) == BACKGROUND
    # Small images are enlarged (at most 3x) and their boxes with them: [2, 2, 8, 8] -> [6, 6, 24, 24].
    big = thumbnail(Image.new("RGB", (10, 10), BACKGROUND), 320, [], [[2, 2, 8, 8]])
    assert big.size == (30, 30) and big.getpixel((6, 7)) == PRED_COLOUR and big.getpixel((5, 7)) == BACKGROUND


# ---------------------------------------------------------------------------------------------- browser
@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs a chromium binary")
def test_a_headless_browser_renders_the_report(tmp_path):
    evaluate_records(_records(tmp_path), _fixed(NOISY), tmp_path / "eval", {"model_path": "m/x"})
    shot = tmp_path / "shot.png"
    cmd = [
        shutil.which("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--screenshot={shot}",
        "--window-size=1200,2400",
        (tmp_path / "eval" / EVAL_REPORT_HTML).as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=150, check=False)
    assert shot.is_file() and shot.stat().st_size > 20_000
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200  # text, tables, badges and thumbnails, not a blank page
    assert any(_close(c, GT_COLOUR, 30) for _, c in colours)  # a ground-truth box made it to the screen
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["n_records"] == 8


def test_run_settings_group_the_budgets_by_value():
    """The image and token budgets of summary.json read as a person reads them: grouped by value, the
    largest first, long groups shortened, one shared budget as "all N"."""
    from qwenvl.eval.report import setting_text

    budgets = {
        "policy": "per_dataset",
        "source": "run_info.json",
        "datasets": {
            "chromosome": {"max_tokens": 1296},
            "retino": {"max_tokens": 256},
            "fundus": {"max_tokens": 256},
            "neojaundice": {"max_tokens": 49},
        },
    }
    assert setting_text("pixel_budgets", budgets) == (
        "policy per_dataset (from run_info.json); at most 1296 visual tokens per image: chromosome; "
        "256 visual tokens per image: retino, fundus; 49 visual tokens per image: neojaundice"
    )
    same = {
        "policy": "global",
        "source": "argument",
        "datasets": {f"d{i}": {"max_tokens": 16} for i in range(5)},
    }
    assert setting_text("pixel_budgets", same) == (
        "policy global (from argument); at most 16 visual tokens per image: all 5"
    )
    tokens = {f"t{i}/classification": 18 for i in range(6)} | {"chromosome/instance_detection": 511}
    assert setting_text("max_new_tokens", tokens) == (
        "511 new tokens: chromosome/instance_detection; 18 new tokens: t0/classification, t1/classification, "
        "t2/classification, t3/classification and 2 more"
    )
    assert setting_text("batch_size", 8) == "8"
