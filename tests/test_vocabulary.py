"""Answer vocabularies of the option tasks (qwenvl/flare/vocabulary.py, qwenvl/flare/tasks/options.py): options
read as a person reads them, in every style of the demo tree and many generated questions; the vocabulary
learnt at conversion, carried and resolved per record; patterns that admit exactly the vocabulary; and the
submission answering the issue's question in letters."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

import pytest

from data_conversion.demo_tree.specs import DEMO_SPECS
from qwenvl.flare.parsing import parse_options
from qwenvl.flare.patterns import AnswerHints
from qwenvl.flare.tasks import CLASSIFICATION, MULTI_LABEL, task_for
from qwenvl.flare.tasks.options import listed_labels
from qwenvl.flare.vocabulary import (
    AS_WRITTEN,
    LETTERS,
    LOWER,
    RULE_CHECKPOINT,
    RULE_CONVERTED,
    RULE_DEFAULT,
    RULE_QUESTION,
    TEXTS,
    UPPER,
    AnswerVocabulary,
    stated_kind,
    stated_separator,
)

CLS = task_for(CLASSIFICATION)
ML = task_for(MULTI_LABEL)
ISSUE_Q = "Which findings are present? A: Nodule B: Effusion C: Cardiomegaly. Separate letters with commas."


# ------------------------------------------------------------------------------------ options, by hand
@pytest.mark.parametrize(
    "question, expected",
    [
        (ISSUE_Q, {"A": "Nodule", "B": "Effusion", "C": "Cardiomegaly"}),
        ("Grade? A: Grade 1. B: Grade 2.", {"A": "Grade 1", "B": "Grade 2"}),
        ("Grade? A: Grade 1.5 B: Grade 2.5 mm. Answer with the letter.", {"A": "Grade 1.5", "B": "Grade 2.5 mm"}),
        (
            "Which? A. Benign vs. malignant B. e.g. a cyst C. Other, etc. Answer with the letter.",
            {"A": "Benign vs. malignant", "B": "e.g. a cyst", "C": "Other, etc."},
        ),
        ("Which? A. Benign vs. Malignant B. Cyst, nodule etc.", {"A": "Benign vs. Malignant", "B": "Cyst, nodule etc."}),
        ("Which? A) x B) y, separate letters with commas", {"A": "x", "B": "y"}),
        ("Which? A) approx. 5 mm B) i.e. none\nAnswer:", {"A": "approx. 5 mm", "B": "i.e. none"}),
        ("Which? A: Yes B: No. Answer with the letter.", {"A": "Yes", "B": "No"}),  # "No." is no abbreviation
        ("Which? A: Grade 2. left B: Grade 3", {"A": "Grade 2. left", "B": "Grade 3"}),
    ],
)  # fmt: skip
def test_an_option_ends_where_its_sentence_or_clause_does(question, expected):
    assert parse_options(question) == expected


def test_every_option_style_of_the_demo_tree(demo_converted):
    """Each converted option question of the demo tree gives back its spec's labels: the colon, dot and paren
    lettered styles, and the unlettered multi-label list that ends in an instruction."""
    seen = set()
    for path in sorted(demo_converted.glob("*_train.json")):
        for record in json.loads(path.read_text()):
            meta = record["meta"]
            spec = DEMO_SPECS[meta["dataset"]]
            if meta["task_type"] == CLASSIFICATION:
                assert parse_options(meta["question"]) == dict(zip("ABCDEFGHIJ", spec.labels)), meta[
                    "question"
                ]
                seen.add(spec.option_style)
            elif meta["task_type"] == MULTI_LABEL:
                labels = spec.extra.get("ml_labels", spec.labels)
                assert parse_options(meta["question"]) == {}
                assert listed_labels(meta["question"]) == list(labels), meta["question"]
                seen.add("unlettered")
    assert seen == {"colon", "dot", "paren", "unlettered"}


# ------------------------------------------------------------------------------ generated questions
TEXTS_POOL = [
    "Normal", "Benign", "Malignant", "Grade 2", "Grade 2.5", "e.g. a cyst", "Benign vs. malignant", "Nodule",
    "Pleural effusion", "Cardiomegaly", "No", "Yes", "Mild NPDR", "Other, etc.", "Type 1 (mild)",
    "approx. 5 mm", "Healthy", "Root canal treatment", "Proliferative DR", "i.e. none", "Stage III",
    "Benign lesion", "Caries",
]  # fmt: skip
STEMS = ["Which findings are present?", "What is the diagnosis", "Question: Which grade is it?", "Classify:"]
TRAILERS = [
    "", ".", ". Separate letters with commas.", " Answer with the letter.", "\nAnswer with the option letter.",
    ". Select all that apply.", ", separate letters with commas.", "? Answer with the letter.",
    ". List every finding present.",
]  # fmt: skip


def _question(rng: random.Random, texts: list[str]) -> tuple[str, str]:
    """A question offering ``texts`` as lettered options in a random style, with a random trailer."""
    style = rng.choice(["colon", "options", "dot", "paren", "parens", "lines", "closed"])
    letters = "ABCDEFGH"
    if style in ("colon", "options", "closed"):
        end = "." if style == "closed" else ""
        body = " ".join(f"{letters[i]}: {t}{end if not t.endswith('.') else ''}" for i, t in enumerate(texts))
        body = ("Options: " if style == "options" else "") + body
    elif style == "dot":
        body = ", ".join(f"{letters[i]}. {t}" for i, t in enumerate(texts))
    elif style == "paren":
        body = " ".join(f"{letters[i]}) {t}" for i, t in enumerate(texts))
    elif style == "parens":
        body = " ".join(f"({letters[i]}) {t}" for i, t in enumerate(texts))
    else:
        body = "\n".join(f"{letters[i]}. {t}" for i, t in enumerate(texts))
    trailer = rng.choice(TRAILERS)
    if body.endswith(".") and trailer.startswith("."):
        trailer = trailer[1:]
    sep = "\n" if style == "lines" else " "
    return f"{rng.choice(STEMS)}{sep}{body}{trailer}", style


def test_generated_questions_round_trip_every_letter_and_text():
    """500 seeded questions: the options parse back exactly, and every option's letter and text (and, for
    multi-label, every subset) is read as that option and written back in letters and in texts."""
    rng = random.Random(22)
    styles = set()
    for _ in range(500):
        texts = rng.sample(TEXTS_POOL, rng.randint(2, 6))
        question, style = _question(rng, texts)
        styles.add(style)
        options = dict(zip("ABCDEFGH", texts))
        assert parse_options(question) == options, question
        letters_v, texts_v = AnswerVocabulary(LETTERS), AnswerVocabulary(TEXTS, case=AS_WRITTEN)
        for letter, text in options.items():
            for answer in (letter, letter.lower(), text):
                assert CLS.parse(answer, question) == letter, (question, answer)
            assert CLS.render(letter, question, letters_v) == letter
            assert CLS.render(letter, question, texts_v) == text
            assert CLS.answer_kind(letter, question) == LETTERS and CLS.answer_kind(text, question) == TEXTS
            assert CLS.in_vocabulary(text, question, texts_v) and not CLS.in_vocabulary(
                text, question, letters_v
            )
        if any("," in t for t in texts):
            continue  # the challenge splits labels on commas: such texts cannot be multi-label answers
        chosen = sorted(rng.sample(list(options), rng.randint(1, len(options))))
        sep = rng.choice([", ", ";", "; ", ","])
        as_letters = AnswerVocabulary(LETTERS, separator=sep)
        as_texts = AnswerVocabulary(TEXTS, separator=sep, case=LOWER)
        for written in (sep.join(chosen), sep.join(options[x] for x in chosen)):
            value = ML.parse(written, question)
            assert value == {" ".join(options[x].lower().split()) for x in chosen}
            letters_answer = ML.render(value, question, as_letters)
            texts_answer = ML.render(value, question, as_texts)
            assert letters_answer == sep.join(chosen)
            assert ML.read_answer(letters_answer) == {x.lower() for x in chosen}
            assert ML.read_answer(texts_answer) == {options[x].lower() for x in chosen}
            assert ML.in_vocabulary(letters_answer, question, as_letters)
            assert not ML.in_vocabulary(letters_answer, question, as_texts)
            assert ML.in_vocabulary(texts_answer, question, as_texts)
    assert styles == {"colon", "options", "dot", "paren", "parens", "lines", "closed"}


def test_generated_unlettered_lists_round_trip():
    rng = random.Random(5)
    for _ in range(200):
        labels = [t for t in rng.sample(TEXTS_POOL, 5) if "," not in t][:4]
        question = f"{rng.choice(STEMS)} Options: {', '.join(labels)}{rng.choice(TRAILERS[1:])}"
        assert listed_labels(question) == labels, question


# ---------------------------------------------------------------------------- what a question states
@pytest.mark.parametrize(
    "question, kind, separator",
    [
        (ISSUE_Q, LETTERS, ", "),
        ("Which grade? A) 0 B) 1\nAnswer with the option letter.", LETTERS, None),
        ("Which findings? Options: a, b. List every finding present, separated by semicolons.", None, ";"),
        ("Which findings? A: x B: y. Give the label names, separated by semicolons.", TEXTS, ";"),
        ("How many? Answer with an integer.", "numbers", None),
        ("Which grade?", None, None),
    ],
)
def test_what_a_question_states(question, kind, separator):
    assert (stated_kind(question), stated_separator(question)) == (kind, separator)


# ------------------------------------------------------------------------------- learnt from answers
def test_a_datasets_vocabulary_is_learnt_from_its_answers():
    q = "Which findings? A: Nodule B: Effusion C: Cardiomegaly"
    assert ML.learn_vocabulary(["B, C", "A", "A, B, C"], [q] * 3) == AnswerVocabulary(
        LETTERS, ", ", UPPER, 3, 0
    )
    # texts in two cases (neither all lower nor as the options write them): as written
    assert ML.learn_vocabulary(["effusion; nodule", "Effusion"], [q] * 2) == AnswerVocabulary(
        TEXTS, "; ", AS_WRITTEN, 2, 0
    )
    assert ML.learn_vocabulary(["effusion; nodule", "cardiomegaly"], [q] * 2).case == LOWER
    mixed = ML.learn_vocabulary(["b;c", "a", "effusion"], [q] * 3)
    assert (mixed.kind, mixed.case, mixed.separator, mixed.n_other) == (LETTERS, LOWER, ";", 1)
    assert CLS.learn_vocabulary(["A", "B", "Nodule"], [q] * 3) == AnswerVocabulary(LETTERS, None, UPPER, 3, 1)
    assert CLS.learn_vocabulary(["I am unsure"], [q]) is None


def test_the_demo_trees_vocabularies_as_the_converter_records_them(demo_converted):
    report = json.loads((demo_converted / "conversion_report.json").read_text())
    table = {
        (name, task): (v["kind"], v["separator"], v["case"], v["n_other"])
        for name, splits in report["datasets"].items()
        for task, v in splits.get("train", {}).get("answer_vocabulary", {}).items()
    }
    letters = ("letters", None, "upper", 0)
    classification = [n for n, s in DEMO_SPECS.items() if s.labels and n not in ("periapical",)]
    expected = {(n, CLASSIFICATION): letters for n in classification}
    expected[("periapical", MULTI_LABEL)] = ("texts", ";", "as written", 0)
    expected[("chestdr", MULTI_LABEL)] = ("texts", ", ", "as written", 0)
    assert table == expected
    assert "answer_vocabulary" not in report["datasets"]["retino"]["test"]  # inference inputs have none


# ------------------------------------------------------------------------------- resolved per record
def _record(dataset: str, task: str, question: str, meta: dict | None = None) -> dict:
    turns = [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": ""}]
    return {"image": "x.png", "conversations": turns, "meta": {"dataset": dataset, "task_type": task,
            "question": question, "has_answer": False, **(meta or {})}}  # fmt: skip


def test_the_rule_that_decides_a_records_vocabulary(registry_at, demo_converted):
    from qwenvl.eval.constrained import answer_vocabulary, with_answer_vocabulary

    registry_at(demo_converted)
    plain = "Which findings? A: Nodule B: Effusion C: Cardiomegaly"
    trained = {"chestdr": {MULTI_LABEL: AnswerVocabulary(LETTERS, ";")}}
    found = answer_vocabulary(_record("chestdr", MULTI_LABEL, ISSUE_Q), trained)
    assert found == (AnswerVocabulary(LETTERS, ";"), RULE_CHECKPOINT)
    vocabulary, rule = answer_vocabulary(_record("chestdr", MULTI_LABEL, ISSUE_Q))
    assert (vocabulary.kind, vocabulary.separator, rule) == (
        TEXTS,
        ", ",
        RULE_CONVERTED,
    )  # the demo's chestdr
    assert answer_vocabulary(_record("unseen", MULTI_LABEL, ISSUE_Q)) == (
        AnswerVocabulary(LETTERS, ", "),
        RULE_QUESTION,
    )
    assert answer_vocabulary(_record("unseen", MULTI_LABEL, plain)) == (
        AnswerVocabulary(TEXTS, ", ", AS_WRITTEN),
        RULE_DEFAULT,
    )
    assert answer_vocabulary(_record("unseen", CLASSIFICATION, plain)) == (
        AnswerVocabulary(LETTERS),
        RULE_DEFAULT,
    )
    assert answer_vocabulary(_record("unseen", "counting", "How many?")) is None
    # resolved once, then carried in meta with its rule
    [annotated] = with_answer_vocabulary([_record("chestdr", MULTI_LABEL, ISSUE_Q)], trained)
    assert annotated["meta"]["answer_vocabulary"]["rule"] == RULE_CHECKPOINT
    assert answer_vocabulary(annotated) == (AnswerVocabulary(LETTERS, ";"), RULE_CHECKPOINT)


# ------------------------------------------------------------------------ patterns admit the vocabulary
OPTIONS_Q = "Which findings? A: Nodule B: Effusion C: Mass"
TOKENS = ["A", "B", "C", "D", "a", "b", "Nodule", "Effusion", "Mass", "nodule", "effusion", "Lung", "AB"]
SEPARATORS = [", ", ",", ";", "; ", " "]


def _candidates(max_items: int = 4) -> set[str]:
    """Every join of up to ``max_items`` tokens by one separator, and the empty string."""
    out = {""}
    for n in range(1, max_items + 1):
        for items in itertools.product(TOKENS, repeat=n):
            out.update(sep.join(items) for sep in SEPARATORS)
    return out


CANDIDATES = _candidates()


def _admitted(pattern: str) -> set[str]:
    rx = re.compile(pattern)
    return {c for c in CANDIDATES if rx.fullmatch(c)}


def _subsets(items: list[str], sep: str) -> set[str]:
    return {sep.join(c) for n in range(1, len(items) + 1) for c in itertools.combinations(items, n)}


@pytest.mark.parametrize(
    "vocabulary, items",
    [
        (AnswerVocabulary(LETTERS), ["A", "B", "C"]),
        (AnswerVocabulary(LETTERS, case=LOWER), ["a", "b", "c"]),
        (AnswerVocabulary(TEXTS, case=AS_WRITTEN), ["Nodule", "Effusion", "Mass"]),
        (AnswerVocabulary(TEXTS, case=LOWER), ["nodule", "effusion", "mass"]),
    ],
)
def test_a_classification_pattern_admits_exactly_one_option_in_the_vocabulary(vocabulary, items):
    pattern = CLS.answer_pattern(OPTIONS_Q, AnswerHints(vocabulary=vocabulary))
    assert _admitted(pattern) == set(items) & set(TOKENS)
    for item in items:  # also the ones outside the candidate tokens
        assert re.fullmatch(pattern, item)


@pytest.mark.parametrize("sep", [", ", ";"])
@pytest.mark.parametrize(
    "vocabulary_kind, items",
    [(LETTERS, ["A", "B", "C"]), (TEXTS, ["Nodule", "Effusion", "Mass"])],
)
def test_a_multi_label_pattern_admits_exactly_the_vocabularys_label_sets(sep, vocabulary_kind, items):
    vocabulary = AnswerVocabulary(
        vocabulary_kind, separator=sep, case=UPPER if vocabulary_kind == LETTERS else AS_WRITTEN
    )
    # no training answers: each offered label at most once, in the question's order
    ordered = ML.answer_pattern(OPTIONS_Q, AnswerHints(vocabulary=vocabulary))
    assert _admitted(ordered) == _subsets(items, sep)
    assert ML.answer_pattern(ISSUE_Q, AnswerHints(vocabulary=vocabulary)) is not None
    # training answers in several orders: any offered labels, up to the room (here 3 of the longest)
    hints = AnswerHints(
        labels=tuple(reversed(items)), ordered=False, max_items=2, n_answers=5, vocabulary=vocabulary
    )
    longest = max(len(i) for i in items)
    loose = ML.answer_pattern(OPTIONS_Q, hints, max_bytes=3 * longest + 2 * len(sep))
    expected = {sep.join(p) for n in (1, 2, 3) for p in itertools.product(items, repeat=n)}
    assert _admitted(loose) == expected


def test_the_issues_question_is_constrained_to_letters():
    vocabulary = AnswerVocabulary(LETTERS, separator=", ")
    pattern = ML.answer_pattern(ISSUE_Q, AnswerHints(vocabulary=vocabulary))
    assert _admitted(pattern) == _subsets(["A", "B", "C"], ", ")
    assert not re.fullmatch(pattern, "Effusion, Cardiomegaly. Separate letters with commas")


# --------------------------------------------------------------------------------- the submission
def _organisers_input(root: Path, n: int = 2) -> Path:
    from PIL import Image

    folder = root / "Xray" / "chestdr"
    (folder / "imagesTs").mkdir(parents=True)
    records = []
    for i in range(n):
        Image.new("RGB", (64, 64), (40 * i, 90, 120)).save(folder / "imagesTs" / f"x{i}.png")
        records.append(
            {"TaskType": "Multi-label Classification", "Modality": "Xray", "ImageName": f"imagesTs/x{i}.png",
             "Question": ISSUE_Q, "Answer": "", "Split": "test"}
        )  # fmt: skip
    (folder / "chestdr_questions_test.json").write_text(json.dumps(records))
    return root


def test_the_submission_answers_the_issues_question_in_letters(tiny_dir, tmp_path):
    """The issue's case with the tiny model and format-guaranteed decoding: every answer is a set of the
    offered letters joined by ", " (the question's rule, named in the summary); with a stand-in that answers
    in texts, the written answer is still letters."""
    from qwenvl.eval.submission import SubmissionOptions, run_submission

    inputs = _organisers_input(tmp_path / "in")
    options = SubmissionOptions(str(inputs), str(tmp_path / "out"), str(tiny_dir), progress=False)
    summary = run_submission(options)
    answers = [p["Answer"] for p in json.loads((tmp_path / "out" / "predictions.json").read_text())]
    assert answers and all(a in _subsets(["A", "B", "C"], ", ") for a in answers), answers
    vocabulary = summary["answer_vocabulary"]["chestdr/multi-label classification"]
    assert (vocabulary["kind"], vocabulary["separator"], vocabulary["rule"]) == (LETTERS, ", ", RULE_QUESTION)
    assert (vocabulary["n"], vocabulary["n_out_of_vocabulary"]) == (2, 0)
    stand_in = SubmissionOptions(
        str(inputs), str(tmp_path / "out2"), str(tmp_path / "no_model"), progress=False
    )
    run_submission(stand_in, generator=lambda recs: ["Effusion, Cardiomegaly"] * len(recs))
    answers = [p["Answer"] for p in json.loads((tmp_path / "out2" / "predictions.json").read_text())]
    assert answers == ["B, C", "B, C"]


def test_a_checkpoints_vocabulary_wins_and_is_named(tmp_path):
    from qwenvl.eval.submission import SubmissionOptions, run_submission

    inputs = _organisers_input(tmp_path / "in", n=1)
    model = tmp_path / "model"
    model.mkdir()
    texts = {"kind": "texts", "separator": "; ", "case": "lower", "n_answers": 9, "n_other": 0}
    (model / "run_info.json").write_text(json.dumps({"answer_vocabulary": {"chestdr": {MULTI_LABEL: texts}}}))
    options = SubmissionOptions(str(inputs), str(tmp_path / "out"), str(model), progress=False)
    summary = run_submission(options, generator=lambda recs: ["B, C"] * len(recs))
    answers = [p["Answer"] for p in json.loads((tmp_path / "out" / "predictions.json").read_text())]
    assert answers == ["effusion; cardiomegaly"]
    assert summary["answer_vocabulary"]["chestdr/multi-label classification"]["rule"] == RULE_CHECKPOINT


# ------------------------------------------------------------------------- evaluation and validation
def test_evaluation_side_files_name_the_vocabulary_and_its_rule(registry_at, demo_converted, tmp_path):
    from qwenvl.eval.evaluate import evaluate_records, load_eval_records

    registry_at(demo_converted)
    records = load_eval_records(["flare_periapical_val", "flare_retino_val"], limit=4)

    def generator(recs):  # per dataset: the reference, free text, the reference, free text
        out = []
        for k, r in enumerate(recs):
            reference = r["conversations"][-1]["value"]
            out.append(reference if k % 2 == 0 else "I cannot tell")
        return out

    result = evaluate_records(records, generator, tmp_path / "eval")
    lines = [json.loads(x) for x in (tmp_path / "eval" / "raw_outputs.jsonl").read_text().splitlines()]
    periapical = [x for x in lines if x["dataset"] == "periapical"]
    assert {x["vocabulary"]["rule"] for x in lines} == {RULE_CONVERTED}
    assert periapical[0]["vocabulary"]["kind"] == TEXTS and periapical[0]["vocabulary"]["separator"] == ";"
    assert [x["in_vocabulary"] for x in periapical] == [True, False, True, False]
    summary = result.summary["answer_vocabulary"]
    assert summary["periapical/multi-label classification"]["n_out_of_vocabulary"] == 2
    retino = summary["retino/classification"]
    assert {k: retino[k] for k in ("kind", "separator", "case", "rule", "n", "n_out_of_vocabulary")} == {
        "kind": LETTERS, "separator": None, "case": UPPER, "rule": RULE_CONVERTED, "n": 4, "n_out_of_vocabulary": 2,
    }  # fmt: skip
    assert result.metrics["vocabulary_findings"][0]["n_other_vocabulary"] == 0


def test_the_validator_names_an_answer_outside_its_datasets_vocabulary(demo_raw, tmp_path):
    from data_conversion.converter import convert
    from data_conversion.validation import NOT_IN_VOCABULARY, validate

    out = tmp_path / "converted"
    convert(demo_raw, out, datasets=["bone_marrow"], splits=("train", "val"), progress=False)
    path = out / "bone_marrow_val.json"
    records = json.loads(path.read_text())
    question = records[1]["meta"]["question"]
    letter = records[1]["conversations"][1]["value"]
    records[1]["conversations"][1]["value"] = parse_options(question)[letter]  # its option's text
    path.write_text(json.dumps(records))
    report = validate(out)
    found = [w for w in report["warnings"] if w["check"] == NOT_IN_VOCABULARY]
    assert [(w["file"], w["index"]) for w in found] == [("bone_marrow_val.json", 1)]
    assert "letters" in found[0]["detail"] and "in form: texts" in found[0]["detail"]
    assert report["ok"]  # a warning: the record converts and trains
