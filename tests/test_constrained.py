"""Format-guaranteed decoding: each task type's answer pattern (hand cases), the agreement of the patterns with
the converted training targets, the budget bound against an adversary that never stops on its own, constrained
answers of the tiny model per task type, and the acceptance check: the untrained model's answers all parse on
every demo dataset."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from qwenvl.eval.constrained import AnswerPlanner, grammar_cache, record_question, training_answers
from qwenvl.flare.patterns import (
    AnswerHints,
    item_order,
    joined,
    lit,
    longest_match_bytes,
    merge_order,
    ordered_subset,
)
from qwenvl.flare.tasks import TASK_TYPES, task_for

REPO = Path(__file__).resolve().parents[1]
PIXELS = ["--min_pixels", "1024", "--max_pixels", "16384"]
STOP = (151643, 151645)  # <|endoftext|>, <|im_end|>
VOCAB = 151936  # the model config's padded vocabulary


def _full(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None


# ----------------------------------------------------------------------------------------- building blocks
def test_ordered_subset_takes_each_item_at_most_once_in_order():
    rx = ordered_subset([lit("a"), lit("b"), lit("c")], lit(";"))
    accepted = ["a", "b", "c", "a;b", "a;c", "b;c", "a;b;c"]
    assert [s for s in [*accepted, "", "b;a", "a;a", "a;b;c;", "c;b"] if _full(rx.text, s)] == accepted
    assert (rx.shortest, rx.longest) == (1, 5)
    items = joined(lit("ab"), lit(", "), 1, 3)  # "ab, ab, ab"
    assert (items.shortest, items.longest) == (2, 10) and _full(items.text, "ab, ab, ab")
    assert not _full(items.text, "ab, ab, ab, ab")


def test_item_order_agrees_with_every_answer_or_says_it_cannot():
    assert item_order([["b", "c"], ["a"]], prefer=["a", "b", "c"]) == (("a", "b", "c"), True)
    assert item_order([["c", "a"]], prefer=["a", "b", "c"]) == (("c", "a"), True)  # the answers win
    assert item_order([["a", "b"], ["b", "a"]]) == (("a", "b"), False)
    assert item_order([["a", "a"]]) == (("a",), False)
    assert merge_order(["b", "d"], ["a", "b", "c", "d", "e"]) == ["a", "b", "c", "d", "e"]


# ------------------------------------------------------------------------------------ patterns, by hand
@pytest.mark.parametrize(
    "question, hints, pattern",
    [
        ("Grade? Options: A: none B: mild C: severe", AnswerHints(), "[ABC]"),
        ("Is it malignant? A. No, B. Yes", AnswerHints(), "[AB]"),
        ("Which? A) Nevus B) Melanoma C) Other D) Keratosis", AnswerHints(), "[ABCD]"),
        ("Which grade is it?", AnswerHints(labels=("B", "D")), "[BD]"),  # the training letters
        ("Which grade is it?", AnswerHints(), "[A-Z]"),
    ],
)
def test_classification_is_one_offered_letter(question, hints, pattern):
    task = task_for("classification")
    assert task.answer_pattern(question, hints) == pattern
    letters = [c for c in "ABCDEFZ" if _full(pattern, c)]
    assert all(task.parse(c, question) == c for c in letters)
    assert not any(_full(pattern, s) for s in ["AB", "b", "B.", " B", ""])


PERIAPICAL_Q = (
    "Which findings are present in this periapical radiograph? Options: caries, periapical lesion, "
    "restoration, root canal treatment, crown. List every finding present, separated by semicolons."
)


def test_multi_label_is_a_set_of_offered_labels_in_the_training_form():
    task = task_for("multi-label classification")
    targets = ["restoration", "periapical lesion;restoration;crown", "caries;restoration"]
    hints = task.answer_hints(targets, [PERIAPICAL_Q] * 3)
    assert (hints.labels, hints.ordered, hints.separator, hints.max_items) == (
        ("caries", "periapical lesion", "restoration", "crown"),
        True,
        ";",
        3,
    )
    pattern = task.answer_pattern(PERIAPICAL_Q, hints)
    all_five = (
        "caries;periapical lesion;restoration;root canal treatment;crown"  # root canal: from the question
    )
    for text in [*targets, "root canal treatment", all_five]:
        assert _full(pattern, text), text
        assert task.parse(text, PERIAPICAL_Q) == set(text.split(";"))
    for text in ["", "crown;caries", "caries;caries", "caries; crown", "caries,crown", "implant"]:
        assert not _full(pattern, text), text
    # The ordered set bounds itself (all five: 63 bytes): a smaller room changes nothing, the planner raises
    # the budget to the longest match instead.
    assert task.answer_pattern(PERIAPICAL_Q, hints, max_bytes=41) == pattern
    assert longest_match_bytes(pattern) == len(all_five) == 63
    # Training answers in several orders: any labels (repeats allowed), as many as fit, at least as many as
    # a training answer holds.
    mixed = task.answer_hints(["alpha, beta", "beta, alpha", "gamma"])
    assert (mixed.labels, mixed.ordered, mixed.separator, mixed.max_items) == (
        ("alpha", "beta", "gamma"),
        False,
        ", ",
        2,
    )
    loose = task.answer_pattern(None, mixed, max_bytes=20)  # (20 + 2) // (5 + 2) = 3 labels
    assert all(_full(loose, s) for s in ["beta, alpha", "gamma, gamma, beta", "alpha"])
    assert not any(_full(loose, s) for s in ["alpha, beta, gamma, alpha", "", "delta"])
    assert longest_match_bytes(task.answer_pattern(None, mixed, max_bytes=6)) == 12  # 2 labels: the floor


def _boxes(n: int, coordinate: str = "1000") -> str:
    return "[" + ", ".join([f"[{coordinate}, {coordinate}, {coordinate}, {coordinate}]"] * n) + "]"


def test_detection_boxes_are_grid_integers_bounded_by_the_room():
    task = task_for("detection")
    assert len(_boxes(3)) == 78 and len(_boxes(7)) == 182  # 24 bytes a widest box, 2 between, 2 around
    free = task.answer_pattern("Detect.", max_bytes=80)  # no training answers: as many as fit
    assert _full(free, _boxes(3)) and not _full(free, _boxes(4))
    assert task.answer_pattern("Detect.", max_bytes=3) == r"\[\]"  # no room for a box: the empty list
    hints = task.answer_hints(["[[50, 200, 150, 400]]", "[]"])
    assert (hints.max_items, hints.max_digits) == (1, 3)
    wide = task.answer_pattern("Detect.", hints, max_bytes=200)  # 7 fit
    assert _full(wide, _boxes(7)) and not _full(wide, _boxes(8))
    # With training answers at least min_boxes (4; or twice their most), even when they do not fit: the
    # planner then raises the budget to the longest match.
    tight = task.answer_pattern("Detect.", hints, max_bytes=3)
    assert _full(tight, _boxes(4)) and not _full(tight, _boxes(5)) and longest_match_bytes(tight) == 104
    assert _full(wide, "[]") and _full(wide, "[[50, 200, 150, 400]]") and _full(wide, _boxes(2, "0"))
    for text in [
        "[[1001, 0, 1, 1]]",
        "[[01, 2, 3, 4]]",
        "[[1.5, 2, 3, 4]]",
        "[[-1, 2, 3, 4]]",
        "[[1,2,3,4]]",
    ]:
        assert not _full(wide, text), text
    assert task.parse(_boxes(3)) == [[1000.0] * 4] * 3 and task.parse("[]") == []
    pixel = task.answer_pattern("Detect.", AnswerHints(box_format="pixel", max_decimals=1, n_answers=1))
    assert _full(pixel, "[[10.5, 2, 1234, 99999.9]]") and not _full(pixel, "[[10.55, 2, 3, 4]]")


def test_instance_detection_ids_once_each_in_the_training_order():
    task = task_for("instance_detection")
    targets = [
        '{"1": [[1, 2, 3, 4]], "2": [[5, 6, 7, 8], [9, 10, 11, 12]]}',
        '{"1": [[1, 2, 3, 4]], "X": []}',
    ]
    hints = task.answer_hints(targets)
    assert (hints.labels, hints.ordered, hints.max_items) == (("1", "2", "X"), True, 2)
    pattern = task.answer_pattern("Detect each chromosome.", hints, max_bytes=200)
    for text in [*targets, "{}", '{"X": [[0, 0, 1000, 1000]]}']:
        assert _full(pattern, text), text
        assert task.parse(text) is not None
    for text in ['{"X": [], "1": []}', '{"1": [], "1": []}', '{"3": []}', '{"1": [[1, 2, 3, 4]],}']:
        assert not _full(pattern, text), text

    # Room for 400 bytes: k boxes per id with 2 + 3 * (5 + 26 k) + 4 <= 400, so k = 4 (k = 5: 411 bytes).
    def every_id(k: int) -> str:
        return "{" + ", ".join(f'"{i}": {_boxes(k)}' for i in ("1", "2", "X")) + "}"

    roomy = task.answer_pattern("Detect each chromosome.", hints, max_bytes=400)
    assert len(every_id(4)) == 333 and _full(roomy, every_id(4)) and not _full(roomy, every_id(5))
    # Less room: still one box more per id than a training answer gives (3), the budget is raised instead.
    assert _full(pattern, every_id(3)) and not _full(pattern, every_id(4))
    assert longest_match_bytes(pattern) == len(every_id(3))
    # No training ids: made-up short ids, 2 boxes each, as many entries as fit; ids may repeat.
    free = task.answer_pattern("Detect.", max_bytes=200)
    assert _full(free, '{"1": [[1, 2, 3, 4], [1, 2, 3, 4]], "1": []}') and not _full(free, '{"a b": []}')


@pytest.mark.parametrize(
    "task, good, bad",
    [
        ("counting", ["0", "7", "123456"], ["0123", "1.5", "-1", "1,234", "1234567", ""]),
        ("regression", ["45", "-12.5", "0.1234", "123456.7"], ["1e-05", "45.", ".5", "--1", "1.23456"]),
    ],
)
def test_numbers(task, good, bad):
    t = task_for(task)
    pattern = t.answer_pattern("How many?", t.answer_hints(["91", "12.5"]))
    assert [s for s in good if _full(pattern, s)] == good
    assert [s for s in bad if _full(pattern, s)] == []
    assert all(t.parse(s) == float(s) for s in good)
    assert not _full(t.answer_pattern("How many?", max_bytes=3), "1000")


def test_report_generation_is_free_text():
    assert task_for("report_generation").answer_pattern("Write the report.") is None


# -------------------------------------------------------------------------------- training agreement
def test_every_converted_answer_matches_its_pattern(registry_at, demo_converted, tiny_dir):
    """Constrained decoding and training agree: every demo training and validation answer of a constrained
    task matches the pattern its record gets, with the budget derived from the training answers."""
    from transformers import AutoTokenizer

    registry_at(demo_converted)
    planner = AnswerPlanner(AutoTokenizer.from_pretrained(tiny_dir))
    checked: dict[str, int] = {}
    for path in sorted(demo_converted.glob("*_train.json")) + sorted(demo_converted.glob("*_val.json")):
        for record in json.loads(path.read_text()):
            plan = planner.plan(record)
            answer = record["conversations"][-1]["value"]
            task = record["meta"]["task_type"]
            if plan.pattern is None:
                assert task == "report_generation"
                continue
            assert plan.budget_source.startswith("training answers (bytes)")
            assert _full(plan.pattern, answer), f"{path.name}: {answer!r} !~ {plan.pattern[:200]}"
            checked[task] = checked.get(task, 0) + 1
    assert set(checked) == set(TASK_TYPES) - {"report_generation"}
    assert sum(checked.values()) > 200


# --------------------------------------------------------------------------- the budget, adversarially
class Adversary:
    """Decodes under a pattern choosing, at every step, a shortest allowed token that is not a stop token,
    avoiding closing brackets while anything else is allowed, the lowest token id on a tie: a model that
    never ends an answer on its own, spends a token per byte and opens every box and instance it may."""

    def __init__(self, cache) -> None:
        self.cache = cache
        info = cache.compiled("[A-Z]").tokenizer_info
        self.vocab = info.decoded_vocab  # (xgrammar rebuilds this list on every access)
        n = info.vocab_size
        self.lengths = np.array([len(b) for b in self.vocab] + [0] * (n - len(self.vocab)))
        self.stop = np.zeros(n, dtype=bool)
        self.stop[list(info.stop_token_ids)] = True
        self.closing = np.array(
            [bool(set(b) & set(b"]}")) for b in self.vocab] + [False] * (n - len(self.vocab))
        )

    def answer(self, pattern: str, budget: int) -> tuple[str, int, bool]:
        """``(answer, tokens used with the stop token, whether it stopped within budget)``."""
        import xgrammar as xgr

        matcher = xgr.GrammarMatcher(self.cache.compiled(pattern))
        bitmask = xgr.allocate_token_bitmask(1, len(self.stop))
        out = b""
        for step in range(1, budget + 1):
            matcher.fill_next_token_bitmask(bitmask, 0)
            bits = np.unpackbits(bitmask[0].numpy().view(np.uint8), bitorder="little")[: len(self.stop)]
            allowed = bits.astype(bool)
            go_on = allowed & ~self.stop
            if not go_on.any():
                assert allowed[self.stop].any()
                return out.decode("utf-8"), step, True
            opening = go_on & ~self.closing
            pool = opening if opening.any() else go_on
            token = int(np.flatnonzero(pool & (self.lengths == self.lengths[pool].min()))[0])
            assert self.lengths[token] > 0 and matcher.accept_token(token)  # every token is a byte or more
            out += self.vocab[token]
        return out.decode("utf-8"), budget, False


@pytest.fixture(scope="module")
def cache(tiny_dir):
    from transformers import AutoTokenizer

    return grammar_cache(AutoTokenizer.from_pretrained(tiny_dir), VOCAB, STOP)


def _one_per_task(converted: Path) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for path in sorted(converted.glob("*_val.json")):
        for record in json.loads(path.read_text()):
            found.setdefault(record["meta"]["task_type"], record)
    return found


@pytest.mark.parametrize("override", [None, 6, 40])
def test_no_constrained_answer_is_cut_at_the_budget(registry_at, demo_converted, cache, override):
    """An adversary that never ends on its own and spends a token per byte still ends every constrained
    answer, complete and parsable, within the budget (derived from the training answers, or a small
    --max_new_tokens, raised where the pattern needs more)."""
    registry_at(demo_converted)
    planner = AnswerPlanner(None, max_new_tokens=override)  # constrained budgets are in bytes
    adversary = Adversary(cache)
    for task, record in _one_per_task(demo_converted).items():
        plan = planner.plan(record)
        if plan.pattern is None:
            continue
        assert longest_match_bytes(plan.pattern) + 1 <= plan.budget
        answer, used, stopped = adversary.answer(plan.pattern, plan.budget)
        assert stopped and used <= plan.budget, (task, plan.budget, answer)
        assert _full(plan.pattern, answer)
        value = task_for(task).parse(answer, record_question(record))
        assert value is not None, (task, answer)
        hints = planner.hints(record)
        if task == "detection":  # the box bound ended it: more boxes than any training answer
            assert len(value) > hints.max_items
        if task == "instance_detection":  # every id, each with one box more than any training answer
            assert list(value) == list(hints.labels)
            assert {len(v) for v in value.values()} == {hints.max_items + 1}


# ----------------------------------------------------------------------------------- with the tiny model
@pytest.fixture(scope="module")
def constrained_outputs(tiny_dir, demo_converted):
    """One demo validation record per task type answered by the untrained tiny model, constrained."""
    import os

    import qwenvl.data as registry
    from qwenvl.eval.generate import BatchGenerator, load_for_generation

    previous = os.environ.get("FLARE25_CONVERTED_DIR")
    os.environ["FLARE25_CONVERTED_DIR"] = str(demo_converted)
    registry.refresh_registry()
    try:
        loaded = load_for_generation(tiny_dir, min_pixels=1024, max_pixels=16384, device="cpu")
        records = list(_one_per_task(demo_converted).values())
        generator = BatchGenerator(loaded.model, loaded.processor, 8, progress=False)
        generations = generator(records)
        plans = [generator.planner.plan(r) for r in records]
    finally:
        if previous is None:
            os.environ.pop("FLARE25_CONVERTED_DIR", None)
        else:
            os.environ["FLARE25_CONVERTED_DIR"] = previous
        registry.refresh_registry()
    return {r["meta"]["task_type"]: (r, p, g) for r, p, g in zip(records, plans, generations)}


@pytest.mark.slow  # one generate call per budget: about 25 s on 2 cores
@pytest.mark.parametrize("task", TASK_TYPES)
def test_a_constrained_answer_matches_its_pattern_and_parses(constrained_outputs, task):
    record, plan, generation = constrained_outputs[task]
    assert generation.error is None
    assert task_for(task).parse(generation.text, record_question(record)) is not None
    if plan.pattern is None:  # report generation: free text, the untrained model runs to the budget
        assert task == "report_generation" and generation.n_new_tokens == plan.budget
        return
    assert _full(plan.pattern, generation.text), (generation.text, plan.pattern[:200])
    assert generation.finished and generation.n_new_tokens <= plan.budget


def test_training_answers_come_from_the_registered_training_split(registry_at, demo_converted):
    registry_at(demo_converted)
    record = json.loads((demo_converted / "chestdr_val.json").read_text())[1]
    assert record["meta"]["task_type"] == "multi-label classification"
    found = training_answers(record)
    train = json.loads((demo_converted / "chestdr_train.json").read_text())
    expected = [
        r["conversations"][-1]["value"]
        for r in train
        if r["meta"]["task_type"] == record["meta"]["task_type"]
    ]
    assert list(found.targets) == expected and found.path == str(demo_converted / "chestdr_train.json")
    assert training_answers({**record, "meta": {**record["meta"], "dataset": "mine"}}) is None


# ------------------------------------------------------------------------------------------- acceptance
def _evaluate():
    spec = importlib.util.spec_from_file_location(
        "script_evaluate_flare", REPO / "scripts" / "evaluate_flare.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.slow
def test_untrained_model_answers_parse_on_every_demo_dataset(registry_at, demo_converted, tiny_dir, tmp_path):
    """The acceptance check: constrained (the default), the untrained tiny model's answers all parse, on all
    19 datasets; free, most do not (the check can fail)."""
    registry_at(demo_converted)
    common = ["--model_path", str(tiny_dir), "--limit", "1", "--no_progress", *PIXELS]
    assert _evaluate()([*common, "--output_dir", str(tmp_path / "constrained")]) == 0
    summary = json.loads((tmp_path / "constrained" / "summary.json").read_text())
    assert summary["decoding"] == "constrained"
    assert len({d.split("/")[0] for d in summary["max_new_tokens"]}) == 19
    assert summary["n_unparsable"] == 0 and summary["n_failed"] == 0
    assert summary["n_truncated"] == 1  # the free-text report alone runs to its budget
    assert summary["constraint"]["n_masked_steps"] > 0
    metrics = json.loads((tmp_path / "constrained" / "metrics.json").read_text())
    assert {t: g["n_unparsable"] for t, g in metrics["by_task"].items()} == {t: 0 for t in TASK_TYPES}

    free = [*common, "--output_dir", str(tmp_path / "free"), "--free_decoding", "--max_new_tokens", "4"]
    assert _evaluate()(free) == 0
    summary = json.loads((tmp_path / "free" / "summary.json").read_text())
    assert summary["decoding"] == "free" and summary["n_unparsable"] >= 10
