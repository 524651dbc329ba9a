"""Records -> messages -> tokens/labels/pixels, length estimates, and the checked SupervisedDataset."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qwenvl.data import data_dict
from qwenvl.data.dataset import SupervisedDataset, build_supervised_dataset, format_report
from qwenvl.data.processing import (
    IGNORE_INDEX,
    encode_record,
    estimate_length,
    record_to_messages,
)
from qwenvl.flare.images import load_rgb
from qwenvl.model import load_processor

GUIDE_MIN_PIXELS, GUIDE_MAX_PIXELS = 784, 50176


@pytest.fixture(scope="module")
def processor(tiny_dir: Path):
    """Small pixel budget (4..16 visual tokens per image) keeps sequences short."""
    return load_processor(tiny_dir, min_pixels=4 * 1024, max_pixels=16 * 1024)


@pytest.fixture(scope="module")
def guide_processor(tiny_dir: Path):
    """The guide's pixel limits: 784 .. 50176 pixels."""
    return load_processor(tiny_dir, min_pixels=GUIDE_MIN_PIXELS, max_pixels=GUIDE_MAX_PIXELS)


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _write(path: Path, width: int, height: int, seed: int = 0) -> str:
    _noise(width, height, seed).save(path)
    return str(path)


def _record(images: list[str], question: str, answer: str) -> dict:
    tags = "<image>\n" * len(images)
    return {
        "image": images[0] if len(images) == 1 else images,
        "conversations": [{"from": "human", "value": tags + question}, {"from": "gpt", "value": answer}],
    }


def _runs(labels: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each contiguous run of supervised positions."""
    runs, start = [], None
    for i, v in enumerate(labels.tolist() + [IGNORE_INDEX]):
        if v != IGNORE_INDEX and start is None:
            start = i
        elif v == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


# ------------------------------------------------------------------------------------------- messages
def test_messages_place_images_where_the_tags_are() -> None:
    record = {
        "image": ["/a.png", "/b.png"],
        "conversations": [
            {"from": "human", "value": "Left: <image>\nRight:  <image>\nWhich side is abnormal?"},
            {"from": "gpt", "value": "Left."},
            {"from": "human", "value": "How sure?"},
            {"from": "gpt", "value": "Very."},
        ],
    }
    assert record_to_messages(record) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Left:"},
                {"type": "image"},
                {"type": "text", "text": "Right:"},
                {"type": "image"},
                {"type": "text", "text": "Which side is abnormal?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Left."}]},
        {"role": "user", "content": [{"type": "text", "text": "How sure?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Very."}]},
    ]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (_record(["/a.png", "/b.png"], "<image>Q", "A") | {"image": ["/a.png"]}, "3 <image> tag.* 1 image"),
        (
            {
                "image": "/a.png",
                "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
            },
            "0 <image> tag.* 1 image",
        ),
        ({"conversations": [{"from": "human", "value": "Q"}]}, "no gpt turn"),
        ({"conversations": []}, "non-empty list"),
        ({"conversations": [{"from": "bot", "value": "A"}]}, "turn 0 must be"),
        ({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "<image>"}]}, "gpt"),
        (
            {"image": 3, "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
            "'image' must be",
        ),
    ],
)
def test_bad_records_raise_naming_the_problem(record: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        record_to_messages(record)


# --------------------------------------------------------------------------------------------- labels
def _expected_labels(processor, images: list[Image.Image], prompt: str, answer: str) -> list[int]:
    """Labels built independently: -100 for the rendered prompt, the answer's own tokens, <|im_end|>, -100."""
    prompt_len = processor(text=[prompt], images=images or None, return_tensors="pt")["input_ids"].shape[1]
    answer_ids = processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    return [IGNORE_INDEX] * prompt_len + answer_ids + [im_end, IGNORE_INDEX]


@pytest.mark.parametrize("n_images", [1, 3])
def test_exact_label_mask_and_image_spans(processor, n_images: int) -> None:
    sizes = [(96, 64), (40, 200), (128, 128)][:n_images]
    images = [_noise(w, h, seed=k) for k, (w, h) in enumerate(sizes)]
    answer = '[{"box_2d": [12, 40, 300, 512], "label": "tumor"}]'
    record = _record([f"/img{k}.png" for k in range(n_images)], "Locate the lesion.", answer)
    out = encode_record(record, processor, images)
    ids, labels, grid = out["input_ids"], out["labels"], out["image_grid_thw"]
    tok = processor.tokenizer

    n_pads = [int(g.prod()) // 4 for g in grid]
    prompt = (
        "<|im_start|>user\n"
        + "".join("<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>" for n in n_pads)
        + "Locate the lesion.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.decode(ids) == prompt + answer + "<|im_end|>\n"
    assert tok.decode(ids[labels != IGNORE_INDEX]) == answer + "<|im_end|>"
    image_text = "<|vision_start|><|image_pad|><|vision_end|>" * n_images
    chat = f"<|im_start|>user\n{image_text}Locate the lesion.<|im_end|>\n<|im_start|>assistant\n"
    assert labels.tolist() == _expected_labels(processor, images, chat, answer)

    # Each image span holds exactly grid.prod() // 4 pads, in image order.
    starts = (ids == tok.convert_tokens_to_ids("<|vision_start|>")).nonzero().flatten().tolist()
    ends = (ids == tok.convert_tokens_to_ids("<|vision_end|>")).nonzero().flatten().tolist()
    assert [e - s - 1 for s, e in zip(starts, ends)] == n_pads
    assert int((ids == processor.image_token_id).sum()) == sum(n_pads)
    assert out["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    assert out["position_ids"].shape == (3, ids.numel())


def test_multi_turn_supervises_every_assistant_turn_only(processor) -> None:
    record = {
        "image": "/a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nIs there a fracture?"},
            {"from": "gpt", "value": "Yes."},
            {"from": "human", "value": "Where?"},
            {"from": "gpt", "value": "Distal radius."},
        ],
    }
    out = encode_record(record, processor, [_noise(64, 64)])
    ids, labels = out["input_ids"], out["labels"]
    tok = processor.tokenizer
    runs = _runs(labels)
    assert [tok.decode(ids[a:b]) for a, b in runs] == ["Yes.<|im_end|>", "Distal radius.<|im_end|>"]
    newline = tok.convert_tokens_to_ids("Ċ")
    assert [int(ids[b]) for _, b in runs] == [newline, newline]  # the template's newline is not supervised
    assert torch.equal(labels[labels != IGNORE_INDEX], ids[labels != IGNORE_INDEX])


def test_text_only_record(processor) -> None:
    record = {"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]}
    out = encode_record(record, processor, [])
    assert set(out) == {"input_ids", "labels", "position_ids"}
    assert processor.tokenizer.decode(out["input_ids"][out["labels"] != IGNORE_INDEX]) == "Hi.<|im_end|>"
    assert out["position_ids"].tolist() == [list(range(out["input_ids"].numel()))] * 3


# -------------------------------------------------------------------------------------------- lengths
LENGTH_CASES = {
    "text only": [],
    "tiny": [(12, 9)],
    "large": [(1600, 1200)],
    "extreme aspect": [(30, 2000)],
    "on the 32 grid": [(224, 96)],
    "exactly max pixels": [(224, 224)],
    "two mixed": [(2000, 31), (500, 500)],
    "three mixed": [(12, 9), (224, 96), (1000, 700)],
}


@pytest.mark.parametrize("sizes", LENGTH_CASES.values(), ids=LENGTH_CASES.keys())
@pytest.mark.parametrize("which", ["processor", "guide_processor"])
def test_estimated_length_equals_encoded_length(request, which: str, sizes: list[tuple[int, int]]) -> None:
    proc = request.getfixturevalue(which)
    record = _record([f"/img{k}.png" for k in range(len(sizes))], "Classify the image.", "Grade 2")
    images = [_noise(w, h, seed=k) for k, (w, h) in enumerate(sizes)]
    real = encode_record(record, proc, images)["input_ids"].numel()
    assert estimate_length(record, proc, sizes) == real


def test_pixel_budget_is_honoured(guide_processor) -> None:
    record = _record(["/a.png", "/b.png", "/c.png"], "Q", "A")
    # 1000x700 -> 256x160 (hand-computed smart_resize: scaled into 50176 px, sides floored to 32).
    out = encode_record(record, guide_processor, [_noise(1000, 700), _noise(10, 10), _noise(224, 224)])
    grid = out["image_grid_thw"]
    assert grid.tolist() == [[1, 10, 16], [1, 2, 2], [1, 14, 14]]
    assert (grid[:, 1:] % 2 == 0).all()  # whole 32x32 blocks
    tokens = grid.prod(-1) // 4
    assert tokens.tolist() == [40, 1, 49]
    assert (tokens <= GUIDE_MAX_PIXELS // 1024).all()
    assert (grid[:, 1] * grid[:, 2] * 256 >= GUIDE_MIN_PIXELS).all()
    assert int((out["input_ids"] == guide_processor.image_token_id).sum()) == 90


# -------------------------------------------------------------------------------------------- dataset
def _register(monkeypatch: pytest.MonkeyPatch, name: str, path: Path, records: list[dict]) -> None:
    path.write_text(json.dumps(records))
    monkeypatch.setitem(data_dict, name, {"annotation_path": str(path), "data_path": "", "labelled": True})


def test_over_length_dropped_and_reported_per_dataset(processor, tmp_path, monkeypatch) -> None:
    img = _write(tmp_path / "a.png", 64, 64)
    short = [_record([img], f"Question {k}?", f"Answer {k}.") for k in range(3)]
    long_answer = " ".join(["lesion"] * 300)
    mixed = [short[0], _record([img], "Q?", long_answer), short[1], _record([img], "Q?", long_answer)]
    _register(monkeypatch, "dp_short", tmp_path / "short.json", short)
    _register(monkeypatch, "dp_mixed", tmp_path / "mixed.json", mixed)
    long_len = estimate_length(mixed[1], processor, [(64, 64)])
    assert long_len > 300

    short_len = estimate_length(short[0], processor, [(64, 64)])
    assert {estimate_length(r, processor, [(64, 64)]) for r in short} == {short_len}

    ds = build_supervised_dataset("dp_short,dp_mixed", processor, model_max_length=200, seed=0)
    four = {"median": 4, "max": 4}  # a 64x64 image is 2x2 blocks of 32x32 pixels
    assert ds.report["datasets"] == {
        "dp_short": {
            "drawn": 3,
            "kept": 3,
            "dropped": {},
            "length": {"median": short_len, "p95": short_len, "max": short_len},
            "over_length": 0,
            "length_to_keep_all": short_len,
            "tokens": 3 * short_len,
            "visual_tokens_per_image": four,
            "kept_tokens": 3 * short_len,  # what an epoch trains on (the cost projection reads these)
            "kept_visual_tokens": 12,
            "kept_longest": short_len,
        },
        "dp_mixed": {  # lengths short, long, short, long: the too-long records are measured too
            "drawn": 4,
            "kept": 2,
            "dropped": {"over_length": 2},
            "length": {"median": short_len, "p95": long_len, "max": long_len},
            "over_length": 2,
            "length_to_keep_all": long_len,
            "tokens": 2 * short_len + 2 * long_len,
            "visual_tokens_per_image": four,
            "kept_tokens": 2 * short_len,
            "kept_visual_tokens": 8,
            "kept_longest": short_len,
        },
    }
    table = format_report(ds.report)
    assert f"--model_max_length {long_len} (MAX_LENGTH={long_len}) keeps them all" in table
    assert [(d["dataset"], d["index"], d["reason"]) for d in ds.report["dropped"]] == [
        ("dp_mixed", 1, "over_length"),
        ("dp_mixed", 3, "over_length"),
    ]
    assert ds.report["dropped"][0]["detail"].startswith(f"{long_len} tokens > model_max_length 200")
    assert ds.report["dropped"][0]["file"] == str(tmp_path / "mixed.json")
    assert ds.report["total_kept"] == len(ds) == 5
    assert ds.report["model_max_length"] == 200
    items = [ds[i] for i in range(len(ds))]
    assert [(it["dataset"], it["index"]) for it in items] == [
        ("dp_short", 0),
        ("dp_short", 1),
        ("dp_short", 2),
        ("dp_mixed", 0),
        ("dp_mixed", 2),
    ]
    assert ds.lengths == [it["input_ids"].numel() for it in items]
    assert max(ds.lengths) <= 200


def test_check_reasons_missing_unreadable_invalid(processor, tmp_path, monkeypatch, caplog) -> None:
    good = _write(tmp_path / "good.png", 64, 48)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a PNG")
    missing = str(tmp_path / "gone.png")
    with_meta = _record([missing], "Q?", "A") | {"meta": {"image_sizes": [[64, 48]]}}
    records = [
        _record([good], "Q?", "A"),
        _record([good, missing], "Q?", "A"),
        with_meta,  # meta sizes are no excuse for a missing file
        _record([str(bad)], "Q?", "A"),
        _record([good, good], "Q?", "A") | {"conversations": [{"from": "human", "value": "<image> Q"}]},
        {
            "image": [good, good],
            "conversations": [{"from": "human", "value": "<image> Q"}, {"from": "gpt", "value": "A"}],
        },
    ]
    sliver = _write(tmp_path / "sliver.png", 1, 250)  # aspect ratio 250: the processor refuses it
    records.append(_record([sliver], "Q?", "A"))
    _register(monkeypatch, "dp_checks", tmp_path / "checks.json", records)
    with caplog.at_level(logging.INFO, logger="qwenvl.data.dataset"):
        ds = build_supervised_dataset("dp_checks", processor, model_max_length=4096, seed=0)
    counts = {k: ds.report["datasets"]["dp_checks"][k] for k in ("drawn", "kept", "dropped", "over_length")}
    assert counts == {
        "drawn": 7,
        "kept": 1,
        "dropped": {"missing_image": 2, "unreadable_image": 2, "invalid_record": 2},
        "over_length": 0,
    }
    by_index = {d["index"]: d for d in ds.report["dropped"]}
    assert by_index[1]["reason"] == "missing_image" and missing in by_index[1]["detail"]
    assert by_index[2]["reason"] == "missing_image" and missing in by_index[2]["detail"]
    assert by_index[3]["reason"] == "unreadable_image" and str(bad) in by_index[3]["detail"]
    assert by_index[4]["reason"] == "invalid_record" and "no gpt turn" in by_index[4]["detail"]
    assert by_index[5]["reason"] == "invalid_record" and "1 <image> tag(s)" in by_index[5]["detail"]
    assert by_index[6]["reason"] == "unreadable_image" and "aspect ratio" in by_index[6]["detail"]
    # The summary table is logged: one row per dataset with drawn / kept / dropped and the reasons.
    table = next(r.getMessage() for r in caplog.records if "Training data check" in r.getMessage())
    row = next(line for line in table.splitlines() if "dp_checks" in line)
    assert row.split()[:4] == ["dp_checks", "7", "1", "6"]
    assert "invalid_record=2, missing_image=2, unreadable_image=2" in row


def test_sampling_rate_repeats_records(processor, tmp_path, monkeypatch) -> None:
    img = _write(tmp_path / "a.png", 64, 64)
    _register(monkeypatch, "dp_rep", tmp_path / "rep.json", [_record([img], f"Q{k}", "A") for k in range(4)])
    ds = build_supervised_dataset("dp_rep%250", processor, model_max_length=4096, seed=3)
    report = ds.report["datasets"]["dp_rep"]
    assert (report["drawn"], report["kept"], report["dropped"]) == (10, 10, {})
    assert report["tokens"] == sum(ds.lengths)  # every draw counts, repeats included
    assert len(ds.lengths) == 10


def test_image_deleted_after_check_returns_none_and_logs(processor, tmp_path, monkeypatch, caplog) -> None:
    keep = _write(tmp_path / "keep.png", 64, 64)
    doomed = _write(tmp_path / "doomed.png", 64, 64, seed=1)
    records = [_record([keep], "Q?", "A"), _record([keep, doomed], "Q?", "B")]
    _register(monkeypatch, "dp_del", tmp_path / "del.json", records)
    ds = build_supervised_dataset("dp_del", processor, model_max_length=4096, seed=0)
    assert len(ds) == 2
    Path(doomed).unlink()
    with caplog.at_level(logging.WARNING, logger="qwenvl.data.dataset"):
        assert ds[1] is None
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert doomed in warning.getMessage()
    assert "dataset dp_del record 1" in warning.getMessage()
    assert ds[0]["index"] == 0  # the other sample is unaffected, no replacement was made

    Path(keep).write_bytes(b"garbage now")  # corrupted in place since the check
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qwenvl.data.dataset"):
        assert ds[0] is None
    assert (
        f"dataset dp_del record 0 ({tmp_path / 'del.json'}): image {keep}" in caplog.records[0].getMessage()
    )


def test_sixteen_bit_xray_reaches_pixels_unsaturated(processor, tmp_path, monkeypatch) -> None:
    ramp = np.tile(np.linspace(1000, 3000, 128), (96, 1)).round().astype(np.uint16)
    path = tmp_path / "xray16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file

    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (96, 128, 3)
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255  # rescaled by the image's own range
    assert 120 <= rgb[48, 64, 0] <= 135  # value ~2000, mid-grey

    _register(monkeypatch, "dp_xray", tmp_path / "xray.json", [_record([str(path)], "Grade?", "2")])
    ds = build_supervised_dataset("dp_xray", processor, model_max_length=4096, seed=0)
    item = ds[0]
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean).repeat_interleave(item["pixel_values"].shape[1] // 3)
    std = torch.tensor(ip.image_std).repeat_interleave(item["pixel_values"].shape[1] // 3)
    pixels = (item["pixel_values"] * std + mean) * 255  # undo the processor's normalisation
    assert 100 <= float(pixels.median()) <= 160
    assert (
        float((pixels > 250).float().mean()) < 0.1
    )  # not saturated (clipping 16-bit to 8-bit gives all 255)
    assert float(pixels.quantile(0.05)) < 40 and float(pixels.quantile(0.95)) > 215  # the ramp survives


def test_records_without_registry_source(processor, tmp_path) -> None:
    img = _write(tmp_path / "a.png", 64, 64)
    ds = SupervisedDataset([_record([img], "Q?", "A"), {"conversations": "bad"}], processor, 4096)
    report = ds.report["datasets"]["records"]
    assert (report["drawn"], report["kept"], report["dropped"]) == (2, 1, {"invalid_record": 1})
    assert ds[0]["index"] == 0


def test_answer_starting_with_a_newline_is_caught_before_training(processor, tmp_path, monkeypatch) -> None:
    """BPE merges a leading newline of the answer into the assistant header, so its labels never encode: the
    check drops it with its file and index instead of skipping it at every epoch."""
    img = _write(tmp_path / "a.png", 64, 64)
    records = [_record([img], "Q?", "A"), _record([img], "Q?", "\nB")]
    _register(monkeypatch, "dp_nl", tmp_path / "nl.json", records)
    ds = build_supervised_dataset("dp_nl", processor, model_max_length=4096, seed=0)
    assert len(ds) == 1
    (drop,) = ds.report["dropped"]
    assert (drop["file"], drop["index"], drop["reason"]) == (str(tmp_path / "nl.json"), 1, "invalid_record")
    assert "starts with a newline" in drop["detail"]
