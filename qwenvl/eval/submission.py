r"""The challenge submission: every ``*_test.json`` under an input folder -> one ``predictions.json``.

The organisers run the team's image offline: ``sh predict.sh`` (``docker/predict.sh``, which calls
:func:`main`) with the hidden test set mounted at ``/workspace/inputs`` in the layout
``<Modality>/<dataset>/<dataset>_questions_test.json`` + ``imagesTs/``, and read
``/workspace/outputs/predictions.json``: ONE JSON list of the input records, every field kept, ``Answer``
filled in. Outside Docker (the tests, a dry run on the demo tree)::

    INPUT_DIR=demo/raw/testing OUTPUT_DIR=/tmp/sub MODEL_PATH=demo/model uv run sh docker/predict.sh
    uv run python -m qwenvl.eval.submission --input_dir demo/raw/testing --output_dir /tmp/sub --model_path demo/model

What it does, in order:

1. finds every ``*_test.json`` below the input folder, recursively, in the order of their POSIX paths
   relative to it (deterministic); records keep their order within a file. A file that is not a readable
   JSON list is warned about and contributes nothing (there is nothing to answer);
2. turns each raw record into the converted format the model was trained on, exactly as the converter does:
   ``ImageName`` resolved against the question file's folder, one ``<image>`` tag per image, the question
   through its task type's prompt rule (:meth:`~qwenvl.flare.tasks.base.TaskType.prompt`: box questions
   state the 0-1000 grid when the boxes are on it), ``meta`` with the original question, the image sizes and
   the box format (``--box_format``, default ``qwen1000``, as the converter's default);
3. generates with :class:`~qwenvl.eval.generate.BatchGenerator` (the training prompt, batched by task type,
   greedy, and whatever decoding constraint it applies) on a checkpoint loaded by
   :func:`~qwenvl.eval.generate.load_for_generation` (its training pixel limits; a GPU when present, bf16);
4. writes each answer as its task type's challenge answer (:func:`qwenvl.eval.predictions.challenge_answer`:
   an option answer in its dataset's answer vocabulary, a number, boxes mapped from the 0-1000 grid back to
   original-image PIXELS) and checks it with the scorer's own reader (``TaskType.parse``). An answer that does
   not parse is replaced by the task's :meth:`~qwenvl.flare.tasks.base.TaskType.fallback_answer` (the first
   offered option, ``0``, ``[]``, ``{}``...): the organisers' scorer must read every answer, and one
   non-number makes a task's MAE infinite.

The answer vocabulary of an option task (:mod:`qwenvl.flare.vocabulary`: option letters or texts, the
separator of a label set) is the checkpoint's for a dataset it was trained on (``run_info.json``), else the one
the question states (``Separate letters with commas``), else the task type's default; the summary lists, per
dataset and task type, which rule applied (``answer_vocabulary``). The decoding pattern admits exactly that
vocabulary.

Records whose images cannot be read are answered from the question alone and named in a warning: the
readable images are kept, and with none the model answers the text alone (for numbers and reports a guess
from the question is closer than any constant); box questions without all their images get the empty
fallback at once, since no box can be placed on an image nobody saw and pixel boxes need its size. Records
of an unknown task type are answered as free text, with a warning.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwenvl.eval.backends import add_generation_flags
from qwenvl.flare.images import inspect_image
from qwenvl.flare.jsonio import write_json_atomic
from qwenvl.flare.parsing import clean_text
from qwenvl.flare.raw import QuestionFileError, read_question_file
from qwenvl.flare.runfiles import EVAL_PREDICTIONS
from qwenvl.flare.schema import BOX_PIXEL, BOX_QWEN1000, IMAGE_TAG
from qwenvl.flare.tasks import TASKS, normalize_task_type
from qwenvl.flare.vocabulary import vocabulary_summary

log = logging.getLogger("qwenvl.submission")

DEFAULT_INPUT_DIR = "/workspace/inputs"
DEFAULT_OUTPUT_DIR = "/workspace/outputs"
DEFAULT_MODEL_PATH = "/opt/flare25/model"  # where docker/Dockerfile puts the checkpoint
QUESTION_FILE_GLOB = "*_test.json"

# Why a record's answer is not the model's plain answer (counted in the summary; all but FALLBACK are warnings).
NO_IMAGE = "unreadable_image"  # answered from the question alone
UNKNOWN_TASK = "unknown_task_type"  # answered as free text
FALLBACK = "fallback_answer"  # the model's answer did not parse (or could not be made): the task's fallback
NOT_A_RECORD = "not_a_record"  # not a JSON object: written back as it came


@dataclass
class Item:
    """One input record on its way to an answer."""

    file: Path
    index: int
    raw: Any
    record: dict | None = None  # the converted-format record the model answers; None = not generated
    answer: Any = None
    notes: list[str] = field(default_factory=list)  # NO_IMAGE, UNKNOWN_TASK, FALLBACK, NOT_A_RECORD

    @property
    def where(self) -> str:
        name = self.raw.get("ImageName") if isinstance(self.raw, dict) else None
        return f"{self.file}[{self.index}] ImageName {json.dumps(name)}"


def find_question_files(input_dir: str | os.PathLike) -> list[Path]:
    """Every ``*_test.json`` below ``input_dir`` (recursively), ordered by POSIX path relative to it."""
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"input folder {root} does not exist; mount the test set there or set INPUT_DIR "
            "(layout: <Modality>/<dataset>/<dataset>_questions_test.json + imagesTs/)"
        )
    files = [p for p in root.rglob(QUESTION_FILE_GLOB) if p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _image_names(raw: dict) -> list[str]:
    names = raw.get("ImageName")
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n.strip()]


def submission_record(raw: dict, folder: Path, box_format: str) -> tuple[dict | None, list[str]]:
    """The converted-format record the model answers for one raw test record (``None``: answer with the
    task's fallback without generating) and the problems found, for the warning."""
    question = raw.get("Question") if isinstance(raw.get("Question"), str) else ""
    task_type = normalize_task_type(raw.get("TaskType"))
    task = TASKS.get(task_type) if task_type else None
    names = _image_names(raw)
    paths = [os.path.normpath(folder / n.strip().replace("\\", "/")) for n in names]
    infos = [inspect_image(p) for p in paths]
    problems = [f"image {k + 1}/{len(infos)}: {i.detail}" for k, i in enumerate(infos) if not i.ok]
    if not names:
        problems.append(f"no usable ImageName ({json.dumps(raw.get('ImageName'))})")
    readable = [i for i in infos if i.ok]
    if task is not None and task.has_boxes and (problems or not readable):
        return None, problems
    prompt = task.prompt(question, box_format) if task else question
    record = {
        "image": [i.path for i in readable],
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TAG}\n" * len(readable) + prompt},
            {"from": "gpt", "value": ""},
        ],
        "meta": {
            "dataset": folder.name,
            "task_type": task_type,
            "split": "test",
            "image_name": raw.get("ImageName"),
            "question": question,
            "image_sizes": [list(i.size) for i in readable if i.size is not None],
            "has_answer": False,
            "prompt_rule": task.prompt_rule(question, box_format) if task else None,
        },
    }
    if len(readable) == 1:
        record["image"] = readable[0].path
    elif not readable:
        del record["image"]  # a text-only record
    if task is not None and task.has_boxes:
        record["meta"]["box_format"] = box_format
    return record, problems


def read_inputs(input_dir: str | os.PathLike, box_format: str) -> list[Item]:
    """Every input record, in output order, with the record the model answers."""
    items: list[Item] = []
    for path in find_question_files(input_dir):
        try:
            raws = read_question_file(path)
        except QuestionFileError as e:
            log.warning("%s; it contributes no predictions", e)
            continue
        for index, raw in enumerate(raws):
            item = Item(path, index, raw)
            items.append(item)
            if not isinstance(raw, dict):
                item.notes.append(NOT_A_RECORD)
                log.warning(
                    "%s is a JSON %s, not a record: written back as it is", item.where, type(raw).__name__
                )
                continue
            item.record, problems = submission_record(raw, path.parent, box_format)
            if problems:
                item.notes.append(NO_IMAGE)
                log.warning("%s: %s; answered from the question alone", item.where, "; ".join(problems))
            if normalize_task_type(raw.get("TaskType")) is None:
                item.notes.append(UNKNOWN_TASK)
                log.warning(
                    "%s: TaskType %s is not a FLARE25 task type; answered as free text",
                    item.where,
                    json.dumps(raw.get("TaskType")),
                )
    return items


def answer_items(items: Sequence[Item], generator: Any) -> None:
    """Generate for the items that have a record and set every item's ``answer``."""
    from qwenvl.eval.generate import as_generation
    from qwenvl.eval.predictions import challenge_answer, record_vocabulary

    asked = [item for item in items if item.record is not None]
    generations = list(generator([item.record for item in asked])) if asked else []
    if len(generations) != len(asked):
        raise RuntimeError(f"the generator returned {len(generations)} answers for {len(asked)} records")
    texts = {id(item): as_generation(g) for item, g in zip(asked, generations)}
    for item in items:
        if NOT_A_RECORD in item.notes:
            continue
        task = TASKS.get(normalize_task_type(item.raw.get("TaskType")) or "")
        question = item.raw.get("Question") if isinstance(item.raw.get("Question"), str) else ""
        gen = texts.get(id(item))
        answer: Any = None
        if gen is not None and gen.error is None:
            try:
                answer, _ = challenge_answer(gen.text, item.record)
            except ValueError as e:  # e.g. boxes without an image size
                log.warning("%s: %s", item.where, e)
                answer = None
        elif gen is not None:
            log.warning("%s: %s", item.where, gen.error)
        if task is None:
            item.answer = clean_text(gen.text) if gen is not None and gen.error is None else ""
        elif answer is None or task.parse(answer, question) is None:
            found = record_vocabulary(item.record) if item.record is not None else None
            item.answer = task.fallback_answer(question, found[0] if found else None)
            item.notes.append(FALLBACK)
            if gen is not None and gen.error is None:
                log.info(
                    "%s: unparsable %s answer %r; fallback %r",
                    item.where,
                    task.name,
                    gen.text[:80],
                    item.answer,
                )
        else:
            item.answer = answer


def with_vocabularies(items: Sequence[Item], model_path: str) -> None:
    """Resolve each option-task record's answer vocabulary once (the checkpoint's for a dataset it was trained
    on, else the question's instruction, else the task default:
    :func:`qwenvl.eval.constrained.answer_vocabulary`) and keep it in the record's ``meta``."""
    from qwenvl.eval.constrained import trained_vocabularies, with_answer_vocabulary

    trained = trained_vocabularies(model_path)
    for item in items:
        if item.record is not None:
            item.record = with_answer_vocabulary([item.record], trained)[0]


def submission_vocabularies(items: Sequence[Item]) -> dict[str, dict[str, Any]]:
    """Per ``dataset/task type`` of the option tasks: the vocabulary the answers were written in, the rule
    that chose it, the records and the answers not in it (:func:`qwenvl.flare.vocabulary.vocabulary_summary`)."""
    from qwenvl.eval.predictions import in_vocabulary, record_vocabulary

    answers = []
    for item in items:
        found = record_vocabulary(item.record) if item.record is not None else None
        if found is not None and item.record is not None:
            meta = item.record["meta"]
            vocabulary = {**found[0].as_record(), "rule": found[1]}
            inside = in_vocabulary(item.answer, item.record)
            answers.append((meta["dataset"], meta["task_type"], vocabulary, inside))
    return vocabulary_summary(answers)


def predictions(items: Sequence[Item]) -> list[Any]:
    """The output list: each raw record with every field kept and ``Answer`` filled in, in input order."""
    return [item.raw if NOT_A_RECORD in item.notes else {**item.raw, "Answer": item.answer} for item in items]


@dataclass
class SubmissionOptions:
    """Arguments of ``python -m qwenvl.eval.submission`` (``docker/predict.sh`` passes its variables)."""

    input_dir: str = DEFAULT_INPUT_DIR
    output_dir: str = DEFAULT_OUTPUT_DIR
    model_path: str = DEFAULT_MODEL_PATH
    batch_size: int | None = None  # None: the backend's default
    box_format: str = BOX_QWEN1000
    max_new_tokens: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    dtype: str | None = None
    device: str | None = None
    progress: bool = True
    backend: str = "hf"  # hf | vllm (the image built with BACKEND=vllm: docker/Dockerfile)


def run_submission(options: SubmissionOptions, generator: Any = None) -> dict:
    """Read every test file, answer every record, write ``predictions.json``; returns a summary. ``generator``
    (records -> texts) replaces the checkpoint, for tests."""
    t0 = time.time()
    items = read_inputs(options.input_dir, options.box_format)
    with_vocabularies(items, options.model_path)
    info: dict[str, Any] = {}
    if generator is None:
        from qwenvl.eval.backends import load_generator_for

        # --no_progress: no bar at all, transformers' weight loading included
        loaded = load_generator_for(options, progress=options.progress)
        info = loaded.info([item.record for item in items if item.record is not None])
        generator = loaded.generator
    t1 = time.time()
    answer_items(items, generator)
    out = Path(options.output_dir) / EVAL_PREDICTIONS
    write_json_atomic(out, predictions(items))
    notes = Counter(note for item in items for note in item.notes)
    return {
        "predictions": str(out),
        "records": len(items),
        "files": len({item.file for item in items}),
        "by_task_type": dict(Counter(_task_name(item.raw) for item in items)),
        "notes": {k: notes[k] for k in (NO_IMAGE, UNKNOWN_TASK, FALLBACK, NOT_A_RECORD) if notes[k]},
        "answer_vocabulary": submission_vocabularies(items),
        "generation_seconds": round(time.time() - t1, 2),
        "total_seconds": round(time.time() - t0, 2),
        **info,
    }


def _task_name(raw: Any) -> str:
    name = normalize_task_type(raw.get("TaskType")) if isinstance(raw, dict) else None
    return name or "unknown"


def parse_args(argv: list[str] | None = None) -> SubmissionOptions:
    env = os.environ
    p = argparse.ArgumentParser(
        description="Answer every *_test.json under --input_dir into --output_dir/predictions.json (the "
        "FLARE25 challenge submission; docker/predict.sh runs this)."
    )
    p.add_argument("--input_dir", default=env.get("INPUT_DIR", DEFAULT_INPUT_DIR), help="default: $INPUT_DIR")
    p.add_argument(
        "--output_dir", default=env.get("OUTPUT_DIR", DEFAULT_OUTPUT_DIR), help="default: $OUTPUT_DIR"
    )
    p.add_argument(
        "--model_path", default=env.get("MODEL_PATH", DEFAULT_MODEL_PATH), help="default: $MODEL_PATH"
    )
    # --backend (default $BACKEND), --batch_size, --min/max_pixels, --dtype, --device
    add_generation_flags(p, backend_env="BACKEND")
    p.add_argument(
        "--box_format",
        default=BOX_QWEN1000,
        choices=(BOX_QWEN1000, BOX_PIXEL),
        help="how the checkpoint was trained to write boxes (the converter's --box_format)",
    )
    p.add_argument("--max_new_tokens", type=int, default=None, help="default: each task type's budget")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    return SubmissionOptions(
        input_dir=a.input_dir,
        output_dir=a.output_dir,
        model_path=a.model_path,
        batch_size=a.batch_size,
        box_format=a.box_format,
        max_new_tokens=a.max_new_tokens,
        min_pixels=a.min_pixels,
        max_pixels=a.max_pixels,
        dtype=a.dtype,
        device=a.device,
        progress=not a.no_progress,
        backend=a.backend,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    from qwenvl.model.loading import ModelNotFoundError

    try:
        summary = run_submission(options)
    except (FileNotFoundError, ModelNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
