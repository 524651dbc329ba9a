"""The vLLM generation backend (qwenvl/eval/vllm_backend.py) against the HF one, for real: vLLM's CPU build,
the tiny Qwen3-VL built with 32-dimension attention heads (vLLM's CPU kernels need at least 32), one engine for
the module. Skipped where vLLM is not installed (the main environment); CI runs it in envs/vllm-cpu
(.ci/vllm_env.sh).

What is held equal to the HF backend, record for record, under greedy decoding: the answer text, the number
of new tokens and whether the model ended its turn, on the demo's validation records of every task type with
two image budgets; the visual tokens of one- and three-image records; the error entries of images that do
not load; an answer cut at its budget; a record of an unknown task type; the submission's predictions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from qwenvl.eval.constrained import FALLBACK_MAX_NEW_TOKENS, record_task, with_answer_vocabulary  # noqa: E402
from qwenvl.eval.generate import BatchGenerator, load_for_generation  # noqa: E402
from qwenvl.flare.pixels import PER_DATASET, BudgetPlan, ImageBudget, dataset_key  # noqa: E402
from qwenvl.flare.tasks import TASK_TYPES, TASKS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGE_PAD = 151655  # <|image_pad|>
# Two budgets, so requests of one call differ in size: retino up to 64 visual tokens, the rest up to 16.
PLAN = BudgetPlan(
    PER_DATASET, ImageBudget(1024, 16384), {dataset_key("retino"): ImageBudget(1024, 65536)}, {}
)


@pytest.fixture(scope="module")
def tiny32(tmp_path_factory) -> Path:
    """The tiny Qwen3-VL (seed 0) with 32-dimension attention heads."""
    from qwenvl.model.tiny import VLLM_CPU_HEAD_DIM, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny32", seed=0, head_dim=VLLM_CPU_HEAD_DIM)


@pytest.fixture(scope="module")
def engine(tiny32):
    """One vLLM engine on the CPU for the module (building one takes about 30 s)."""
    from qwenvl.eval.vllm_backend import EngineSettings, load_engine

    return load_engine(tiny32, device="cpu", settings=EngineSettings(max_num_seqs=8))


@pytest.fixture(scope="module")
def hf(tiny32):
    return load_for_generation(tiny32, device="cpu")


@pytest.fixture(scope="module")
def val_records(demo_converted):
    """The demo's validation records (every task type; one-, two- and three-image records)."""
    import qwenvl.data as registry
    from qwenvl.eval.evaluate import load_eval_records, registry_names_for

    with pytest.MonkeyPatch.context() as env:  # the module's own registry_at
        env.setenv("FLARE25_CONVERTED_DIR", str(demo_converted))
        registry.refresh_registry()
        yield with_answer_vocabulary(load_eval_records(registry_names_for(None, "val")))
    registry.refresh_registry()


def _vllm(engine, **kw):
    from qwenvl.eval.vllm_backend import VLLMGenerator

    kw.setdefault("pixel_plan", PLAN)
    return VLLMGenerator(engine.llm, engine.processor, engine.stop_ids, progress=False, **kw)


def _hf(hf, **kw):
    kw.setdefault("pixel_plan", PLAN)
    return BatchGenerator(hf.model, hf.processor, 8, progress=False, **kw)


def _same(a, b) -> tuple:
    return (a.text, a.n_new_tokens, a.finished, a.error) == (b.text, b.n_new_tokens, b.finished, b.error)


def _image_record(tmp_path: Path, name: str, data: bytes | None, task: str = "classification") -> dict:
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    question = "Is there a lesion?\nA: yes\nB: no"
    return {
        "image": str(path),
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": "A"},
        ],
        "meta": {"task_type": task, "question": question, "dataset": "retino"},
    }


# ----------------------------------------------------------------------------------------- agreement
def test_every_task_type_parses_and_every_answer_equals_the_hf_backend(engine, hf, val_records, tmp_path):
    from qwenvl.eval.evaluate import evaluate_records

    assert {record_task(r) for r in val_records} == set(TASK_TYPES)
    vllm_gen, hf_gen = _vllm(engine), _hf(hf)
    assert vllm_gen.budgets(val_records) == hf_gen.budgets(val_records)
    t0 = time.time()
    ours = evaluate_records(val_records, vllm_gen, tmp_path / "vllm", report_samples=0)
    t1 = time.time()
    theirs = evaluate_records(val_records, hf_gen, tmp_path / "hf", report_samples=0)
    t2 = time.time()
    differ = [
        (p.dataset, p.task_type, p.text, q.text)
        for p, q in zip(ours.outputs, theirs.outputs)
        if (p.text, p.n_new_tokens, p.finished) != (q.text, q.n_new_tokens, q.finished)
    ]
    assert not differ, f"{len(differ)} of {len(val_records)} answers differ: {differ[:5]}"
    for record, out in zip(val_records, ours.outputs):  # structured outputs: every constrained answer parses
        if vllm_gen.planner.plan(record).pattern is not None:
            question = (record.get("meta") or {}).get("question", "")
            assert out.finished and TASKS[record_task(record)].parse(out.text, question) is not None, out
    assert ours.metrics["by_dataset"] == theirs.metrics["by_dataset"]
    assert ours.summary["n_unparsable"] == 0 and ours.summary["n_failed"] == 0
    print(f"{len(val_records)} records: vLLM {t1 - t0:.1f} s, HF {t2 - t1:.1f} s, all answers equal")


def test_one_and_three_image_records_get_their_budgets_visual_tokens(engine, hf, val_records):
    one = next(r for r in val_records if (r.get("meta") or {}).get("dataset") == "retino")
    three = next(r for r in val_records if isinstance(r["image"], list) and len(r["image"]) == 3)
    assert PLAN.for_record(one) != PLAN.for_record(three)
    gen, ref = _vllm(engine), _hf(hf)
    requests = [gen.request(one), gen.request(three)]
    outputs = engine.llm.generate(
        requests, [gen.sampling_params(one), gen.sampling_params(three)], use_tqdm=False
    )
    for record, out in zip((one, three), outputs):
        item = ref._inputs([record])[0]
        expected = ref._encode([item], PLAN.for_record(record))["input_ids"][0].tolist()
        assert list(out.prompt_token_ids) == expected  # same prompt, same visual tokens per image
    assert list(outputs[0].prompt_token_ids).count(IMAGE_PAD) > 16  # retino's larger budget was used
    mixed = gen([one, three, one])
    assert all(_same(a, b) for a, b in zip(mixed, ref([one, three, one])))


# --------------------------------------------------------------------------------- the HF backend's rules
def test_images_that_do_not_load_get_the_hf_backends_error_entries(engine, hf, val_records, tmp_path):
    good = next(r for r in val_records if (r.get("meta") or {}).get("dataset") == "retino")
    records = [
        _image_record(tmp_path, "missing.png", None),
        good,
        _image_record(tmp_path, "corrupt.png", b"\x89PNG not an image"),
    ]
    ours, theirs = _vllm(engine)(records), _hf(hf)(records)
    assert ours[0].error and ours[2].error and ours[1].error is None and ours[1].text
    assert all(_same(a, b) for a, b in zip(ours, theirs)), (ours, theirs)


def test_an_answer_cut_at_its_budget_is_unfinished_as_with_hf(engine, hf, val_records):
    report = next(r for r in val_records if record_task(r) == "report_generation")
    ours = _vllm(engine, max_new_tokens=3, free_decoding=True)([report])[0]
    theirs = _hf(hf, max_new_tokens=3, free_decoding=True)([report])[0]
    assert (ours.n_new_tokens, ours.finished) == (3, False)
    assert _same(ours, theirs)


def test_an_unknown_task_type_is_answered_as_free_text_with_the_fallback_budget(engine, hf, val_records):
    base = next(r for r in val_records if record_task(r) == "classification")
    record = {**base, "meta": {**base["meta"], "task_type": "segmentation"}}
    gen = _vllm(engine)
    assert record_task(record) is None and gen.budget_for(record) == FALLBACK_MAX_NEW_TOKENS
    assert gen.planner.plan(record).pattern is None
    assert _same(gen([record])[0], _hf(hf)([record])[0])


# ------------------------------------------------------------------------------------------ submission
@pytest.mark.timeout(900)
def test_submission_with_backend_vllm_on_the_demo_testing_split(demo_raw, tiny32, hf, tmp_path):
    """docker/predict.sh with BACKEND=vllm (its own engine, in a fresh process) writes the predictions the HF
    backend writes for the same checkpoint and settings."""
    from qwenvl.eval import submission as sub

    inputs = demo_raw / "testing"
    env = {
        **os.environ,
        "INPUT_DIR": str(inputs),
        "OUTPUT_DIR": str(tmp_path / "vllm"),
        "MODEL_PATH": str(tiny32),
        "PYTHON": sys.executable,
        "BACKEND": "vllm",
        "MIN_PIXELS": "1024",
        "MAX_PIXELS": "16384",
        "MAX_NEW_TOKENS": "48",
    }
    t0 = time.time()
    proc = subprocess.run(
        ["sh", "docker/predict.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=880
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["backend"] == "vllm" and summary["pixel_budgets"]["global"]["max_pixels"] == 16384
    options = sub.SubmissionOptions(
        input_dir=str(inputs),
        output_dir=str(tmp_path / "hf"),
        model_path=str(tiny32),
        max_new_tokens=48,
        progress=False,
    )
    reference = BatchGenerator(
        hf.model, hf.processor, 8, 48, progress=False, pixel_plan=BudgetPlan.single(ImageBudget(1024, 16384))
    )
    sub.run_submission(options, generator=reference)
    ours = json.loads((tmp_path / "vllm" / "predictions.json").read_text())
    theirs = json.loads((tmp_path / "hf" / "predictions.json").read_text())
    assert len(ours) == summary["records"] > 0 and ours == theirs
    print(f"predict.sh --backend vllm: {len(ours)} records in {time.time() - t0:.1f} s")


# ------------------------------------------------------------------------------------------ training
def test_generation_eval_with_vllm_needs_a_gpu_on_this_build(tiny32, hf, val_records):
    from qwenvl.eval.callback import GenerationEvalCallback

    callback = GenerationEvalCallback(
        val_records[:2], hf.processor, 1, backend="vllm", model_path=str(tiny32), pixel_plan=PLAN
    )
    with pytest.raises(RuntimeError, match="cannot load new weights"):
        callback.evaluate(hf.model, step=1)
    assert callback.engine is None  # refused before building an engine
