"""scripts/test_data_loading.py: the three sections on converted demo data, clean and damaged after conversion,
a tag/image mismatch, the default dataset selection, and an unloadable model path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import qwenvl.data as registry
from data_conversion.converter import convert
from data_conversion.make_demo_dataset import make_demo_dataset
from qwenvl.tools import data_check as dc

REPO = Path(__file__).resolve().parents[1]
STARTERS = ["neojaundice", "retino", "BUSI-det", "boneresorption", "bone_marrow"]
RULE = "=" * 80


@pytest.fixture(scope="module")
def tiny_model(tiny_dir: Path) -> Path:
    """The session's tiny Qwen3-VL (tests/conftest.py)."""
    return tiny_dir


@pytest.fixture(scope="module")
def processor(tiny_model: Path):
    from qwenvl.model import load_processor

    return load_processor(tiny_model)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The five starter datasets of the demo tree (4 records each), converted: the training split only."""
    root = tmp_path_factory.mktemp("clean")
    make_demo_dataset(root / "raw", seed=0, samples_per_split=4)
    convert(root / "raw", root / "converted", datasets=STARTERS, splits=["train"], progress=False)
    return root / "converted"


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Path, str, str]:
    """The defective demo tree converted (the converter skips its defects), then damaged after conversion:
    the image of retino record 0 deleted, the image of bone_marrow record 1 overwritten with garbage."""
    make_demo_dataset(tmp_path / "raw", seed=0, samples_per_split=4, with_defects=True)
    convert(tmp_path / "raw", tmp_path / "converted", datasets=STARTERS, splits=["train"], progress=False)
    retino = json.loads((tmp_path / "converted" / "retino_train.json").read_text())
    marrow = json.loads((tmp_path / "converted" / "bone_marrow_train.json").read_text())
    deleted, corrupted = retino[0]["image"], marrow[1]["image"]
    os.remove(deleted)
    Path(corrupted).write_bytes(b"\x00not an image" * 20)
    return tmp_path / "converted", deleted, corrupted


@pytest.fixture(autouse=True)
def restore_registry(monkeypatch: pytest.MonkeyPatch):
    """The checks rebuild the process-wide registry from the folder they are given; put it back afterwards."""
    monkeypatch.delenv("QWENVL_EXTRA_DATASETS", raising=False)
    yield
    monkeypatch.undo()
    registry.refresh_registry()


def _summary(lines: list[str]) -> list[str]:
    return lines[lines.index("TEST SUMMARY") - 1 :]


# ---------------------------------------------------------------------------------------------- clean
def test_clean_demo_data_passes(
    clean: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLARE25_CONVERTED_DIR", str(clean))  # main() sets it from --converted_dir
    status = dc.main(["--converted_dir", str(clean), "--model_path", str(tiny_model)])
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert _summary(out) == [
        RULE,
        "TEST SUMMARY",
        RULE,
        "",
        "📋 Annotation Tests: ✅ PASSED",
        "   Total samples: 20",
        "   Datasets: 5",
        "",
        "📸 Image Tests: ✅ PASSED",
        "   Images tested: 25",
        "   Missing: 0",
        "   Corrupted: 0",
        "",
        "🔧 Model Tests: ✅ PASSED",
        "   Samples tested: 8",
        "   Over model_max_length 4096: 0",
        "",
        RULE,
        "🎉 ALL TESTS PASSED - Ready for training!",
        RULE,
    ]
    # neojaundice has 3 views per record: 12 + 4 x 4 distinct images, all checked for existence.
    assert "  Existence checked for all 28 referenced images; 25 fully decoded" in out


def test_samples_go_through_the_training_path(clean: Path, tiny_model: Path, processor) -> None:
    cfg = dc.DataCheckConfig(converted_dir=clean, demo_model=True, demo_model_dir=tiny_model, num_samples=10)
    res = dc.run_data_checks(cfg, emit=lambda line: None, processor=processor)
    assert res.passed and res.model.model_path == str(tiny_model)
    # Spread round-robin over the five datasets: two samples each.
    assert sorted(s.dataset for s in res.model.samples) == sorted(
        [registry.registry_name(d) for d in STARTERS] * 2
    )
    answers = {}
    for name in STARTERS:
        records = json.loads((clean / f"{name}_train.json").read_text())
        answers[registry.registry_name(name)] = [r["conversations"][1]["value"] for r in records]
    for s in res.model.samples:
        n_images = 3 if s.dataset == "flare_neojaundice" else 1
        assert (s.n_images, len(s.grid)) == (n_images, n_images)
        assert s.image_tokens == s.expected_image_tokens == sum(t * h * w for t, h, w in s.grid) // 4 > 0
        assert s.pixel_rows == sum(t * h * w for t, h, w in s.grid)
        assert s.length == s.estimated_length <= 4096
        assert s.supervised_text == answers[s.dataset][s.index] + "<|im_end|>"
        assert s.problems == []


def test_over_length_samples_are_counted_as_training_drops_them(clean: Path, processor) -> None:
    from qwenvl.data.dataset import build_supervised_dataset

    names = ",".join(registry.registry_name(d) for d in STARTERS)
    registry.refresh_registry(clean)
    plan = registry.plan_image_budgets(names)  # the budgets training (and the data check) give them
    lengths = build_supervised_dataset(names, processor, 100_000, seed=42, pixel_plan=plan).lengths
    limit = sorted(lengths)[len(lengths) // 2]  # about half the records are longer
    expected_over = sum(n > limit for n in lengths)
    assert 0 < expected_over < len(lengths)
    lines: list[str] = []
    cfg = dc.DataCheckConfig(converted_dir=clean, model_max_length=limit, num_samples=20)
    res = dc.run_data_checks(cfg, emit=lines.append, processor=processor)
    assert len(res.model.over_length) == expected_over
    assert len(res.model.samples) == len(lengths) - expected_over  # only the kept ones are encoded
    assert all(s.length <= limit for s in res.model.samples)
    assert res.model.passed  # a drop is reported, not a failure: training runs without those records
    assert (
        f"   Over model_max_length {limit}: {expected_over} ⚠️ dropped from training (raise --model_max_length "
        "or lower the image budget: NAME@TOKENS, --max_pixels)"
    ) in lines


# --------------------------------------------------------------------------------------------- damaged
def test_images_damaged_after_conversion_fail(damaged: tuple[Path, str, str], processor) -> None:
    converted, deleted, corrupted = damaged
    lines: list[str] = []
    cfg = dc.DataCheckConfig(converted_dir=converted, num_images=100, num_samples=100)
    res = dc.run_data_checks(cfg, emit=lines.append, processor=processor)
    assert not res.passed
    assert res.annotations.passed and res.annotations.total_records == 16  # the converter skipped 4 defects
    im = res.images
    assert (im.referenced, im.tested) == (22, 21)
    assert [(p.path, p.dataset, p.record) for p in im.missing] == [(deleted, "flare_retino", 0)]
    assert [(p.path, p.dataset, p.record) for p in im.corrupt] == [(corrupted, "flare_bone_marrow", 1)]
    assert im.corrupt[0].detail.startswith("UnidentifiedImageError")
    # The training path agrees: the missing image's record is dropped, the corrupt one cannot be encoded.
    assert res.model.report["datasets"]["flare_retino"]["dropped"] == {"missing_image": 1}
    failed = [(s.dataset, s.index) for s in res.model.samples if not s.passed]
    assert failed == [("flare_bone_marrow", 1)]
    assert _summary(lines)[8:14] == [
        "📸 Image Tests: ❌ FAILED",
        "   Images tested: 21",
        "   Missing: 1",
        f"      {deleted}",
        "   Corrupted: 1",
        f"      {corrupted}",
    ]
    assert "   Samples tested: 15 (1 failed)" in lines
    assert "  ❌ flare_bone_marrow record 1: 1 image(s), not encoded" in lines
    assert f"       problem: an image cannot be loaded: {corrupted} (training skips this sample)" in lines
    assert lines[-2] == "❌ TESTS FAILED (Image, Model) - fix the problems above before training"


# ------------------------------------------------------------------------------------------ annotations
def test_tag_image_mismatch_fails_the_annotation_section(clean: Path, tmp_path: Path, processor) -> None:
    records = json.loads((clean / "retino_train.json").read_text())
    records[2]["conversations"][0]["value"] = "<image>\n" + records[2]["conversations"][0]["value"]
    path = tmp_path / "my_retino.json"
    path.write_text(json.dumps(records))
    registry.register_dataset("my_retino", path)
    lines: list[str] = []
    cfg = dc.DataCheckConfig(datasets=["my_retino"], num_samples=2)
    res = dc.run_data_checks(cfg, emit=lines.append, processor=processor)
    ann = res.annotations.datasets[0]
    assert not res.annotations.passed and not res.passed
    assert (ann.name, ann.records) == ("my_retino", 4)
    assert ann.issues == [
        dc.RecordIssue(2, dc.TAG_MISMATCH, "2 <image> tag(s) in the human turn(s) but 1 image(s)")
    ]
    assert "       1 record(s) tag_mismatch: records 2" in lines
    assert "📋 Annotation Tests: ❌ FAILED" in lines
    assert res.model.report["datasets"]["my_retino"]["dropped"] == {"invalid_record": 1}  # training agrees


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        ([1, 2], dc.NOT_AN_OBJECT),
        ({"image": "/a.png"}, dc.MISSING_KEYS),
        ({"image": 3, "conversations": []}, dc.BAD_IMAGE_FIELD),
        (
            {"image": "/a.png", "conversations": [{"from": "human", "value": "<image>\nq"}]},
            dc.BAD_CONVERSATIONS,
        ),
        (
            {
                "image": ["/a.png", "/b.png"],
                "conversations": [{"from": "human", "value": "<image>q"}, {"from": "gpt", "value": "A"}],
            },
            dc.TAG_MISMATCH,
        ),
        (
            {
                "image": "/a.png",
                "conversations": [{"from": "human", "value": "<image>q"}, {"from": "gpt", "value": " "}],
            },
            dc.EMPTY_ANSWER,
        ),
    ],
)
def test_record_checks(record: object, kind: str) -> None:
    assert [k for k, _ in dc.check_annotation_record(record)] == [kind]


def test_good_record_has_no_issue() -> None:
    rec = {
        "image": "/a.png",
        "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "A"}],
    }
    assert dc.check_annotation_record(rec) == []


def test_file_level_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image": ')
    obj = tmp_path / "obj.json"
    obj.write_text("{}")
    assert dc.check_annotation_file("a", {"annotation_path": str(tmp_path / "none.json")}).file_error == (
        f"file not found: {tmp_path / 'none.json'}"
    )
    assert dc.check_annotation_file("b", {"annotation_path": str(bad)}).file_error.startswith(
        f"not valid JSON: {bad}"
    )
    assert (
        dc.check_annotation_file("c", {"annotation_path": str(obj)}).file_error
        == f"{obj} holds a JSON dict, not a list of records"
    )
    hidden = dc.check_annotation_file("d", {"annotation_path": str(obj), "labelled": False})
    assert "inference inputs without answers" in hidden.file_error


def test_default_selection_is_the_labelled_training_files(tmp_path: Path) -> None:
    for name in ("retino_train", "retino_val", "retino_test", "chestdr_val_hidden", "BUSI-det_train"):
        (tmp_path / f"{name}.json").write_text("[]")
    chosen, errors = dc.resolve_check_datasets(None, tmp_path)
    assert [n for n, _ in chosen] == ["flare_retino", "flare_busi_det"] and errors == []
    registry.register_dataset("mine", tmp_path / "retino_train.json")
    registry.register_dataset("mine_inputs", tmp_path / "retino_test.json", labelled=False)
    assert [n for n, _ in dc.resolve_check_datasets(None, None)[0]] == [
        "flare_retino",
        "flare_busi_det",
        "mine",
    ]
    chosen, errors = dc.resolve_check_datasets(["flare_retino%50,flare_chestdr"], None)
    assert [n for n, _ in chosen] == ["flare_retino"]
    assert errors[0].startswith(
        "unknown dataset 'flare_chestdr'.\nIt is FLARE25 dataset 'chestdr', not converted yet"
    )
    assert dc.resolve_check_datasets(["flare_retino%abc"], None) == (
        [],
        ["bad sampling rate in 'flare_retino%abc': expected NAME%NUMBER, e.g. flare_retino%50"],
    )


def test_no_registered_dataset_fails_with_the_convert_command(tmp_path: Path) -> None:
    res = dc.run_annotation_tests(dc.DataCheckConfig(converted_dir=tmp_path))
    assert not res.passed
    assert res.errors == [
        f"no labelled training dataset is registered (looked for <dataset>_train.json in {tmp_path}). Convert the "
        f"data first: {dc.CONVERT_COMMAND} --output_dir {tmp_path}, or pass --converted_dir."
    ]


# ------------------------------------------------------------------------------------------------ model
def test_unloadable_model_path_gives_the_clear_message(clean: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "test_data_loading.py"),
            "--converted_dir",
            str(clean),
            "--model_path",
            str(missing),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert (
        f"  ❌ Could not load the processor of '{missing}': the folder {missing} does not exist. The Model Tests"
        in res.stdout
    )
    assert "--model_path" in res.stdout and "--demo_model" in res.stdout
    assert "🔧 Model Tests: ❌ FAILED\n   Processor not loaded: " + str(missing) in res.stdout
    assert "📋 Annotation Tests: ✅ PASSED" in res.stdout and "📸 Image Tests: ✅ PASSED" in res.stdout


def test_uncached_hub_id_offline_is_refused_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(dc.ProcessorUnavailable) as err:
        dc.load_processor_offline_first("flare25-tests/not-a-model", 784, 50176)
    msg = str(err.value)
    assert msg.startswith(
        "Could not load the processor of 'flare25-tests/not-a-model': it is not a local folder, its"
    )
    assert "the hub cannot be reached" in msg and "--demo_model" in msg and "\n" not in msg


def test_demo_model_is_built_only_when_absent(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qwenvl.model.tiny as tiny

    built: list[Path] = []
    monkeypatch.setattr(tiny, "build_tiny_model", lambda folder: built.append(Path(folder)) or Path(folder))
    assert dc.ensure_demo_model(tiny_model, print) == tiny_model and built == []
    assert dc.ensure_demo_model(tmp_path / "demo", print) == tmp_path / "demo" and built == [
        tmp_path / "demo"
    ]
