"""The converted-record format: the one contract between conversion and everything downstream.

A converted file ``<output_dir>/<dataset>_<split>.json`` is a JSON list of records in the format the official
Qwen3-VL finetune code reads, plus a ``meta`` block that keeps each record's origin::

    {
      "image": "/abs/path/imagesTr/x.jpg",            # or a list of absolute paths, in the raw order
      "conversations": [
        {"from": "human", "value": "<image>\\n<prompt>"},   # one "<image>\\n" per image, in order, then
                                                           # TaskType.prompt(Question, box_format)
        {"from": "gpt", "value": "<answer string>"}                    # "" for inference inputs
      ],
      "meta": {
        "dataset": "BUSI-det",                # folder name
        "task_type": "detection",             # normalised (qwenvl.flare.tasks.TASK_TYPES)
        "modality": "Ultrasound",             # modality folder
        "split": "train",                     # train | val | val_hidden | test
        "source_split_folder": "training",    # raw folder it came from
        "source_file": "/abs/.../BUSI-det_questions_train.json",
        "source_index": 17,                   # index of the record in that file
        "image_name": "imagesTr/x.jpg",       # original ImageName (str or list), for challenge-format output
        "question": "...",                    # original Question (challenge records are rebuilt from it)
        "image_sizes": [[w, h]],              # original pixel size of each image, from its header
        "has_answer": true,                   # false for validation-hidden / testing inputs
        "box_format": "qwen1000",             # only for box tasks: "qwen1000" (0-1000 grid) or "pixel"
        "prompt_rule": "box_grid_rewrite"     # how the prompt came from the Question: "verbatim" or the
                                              # rule of TaskType.prompt_rule (0-1000 box convention stated)
      }
    }

Image paths are absolute, so files work from any working directory; registry entries carry
``data_path: ""``. Answers are always strings: numbers are written as JSON, boxes as JSON lists.

:func:`record_problems` is the one check of a record's structure: the validation of converted files
(``data_conversion/validation.py``), the data check (``qwenvl/tools/data_check``) and the training code
(``qwenvl/data/processing.py``) all use it, each adding the checks of its own (image files, box answers).
"""

from __future__ import annotations

from typing import Any

IMAGE_TAG = "<image>"

# Box coordinate systems a converted file may use (recorded per record in meta.box_format).
BOX_QWEN1000 = "qwen1000"
BOX_PIXEL = "pixel"

# meta.prompt_rule of a record whose human turn shows the question as written (TaskType.prompt_rule names the
# others, e.g. qwenvl/flare/tasks/box_prompt.py's box_grid_rewrite / box_grid_append).
PROMPT_VERBATIM = "verbatim"

# Why a raw record was not converted (conversion_report.json "reason" values).
SKIP_MISSING_IMAGE = "missing_image"  # an image file (any of a multi-image record's) does not exist
SKIP_CORRUPT_IMAGE = "corrupt_image"  # an image file exists but does not decode
SKIP_EMPTY_ANSWER = "empty_answer"  # a labelled split (train/val) record with an empty Answer
SKIP_DUPLICATE = "duplicate"  # repeats an earlier (ImageName, Question) pair of the same file
SKIP_UNKNOWN_TASK = "unknown_task_type"  # TaskType is not one of the seven FLARE25 task types
SKIP_INVALID_RECORD = "invalid_record"  # not an object, or a required field is missing / of the wrong type
SKIP_UNPARSABLE_ANSWER = "unparsable_answer"  # a box / number answer that cannot be parsed
SKIP_UNREADABLE_FILE = "unreadable_file"  # the whole question file is not valid JSON (file-level entry)
# Known noise of the real data (TaskType.raw_answer_problem; --keep_noisy converts these records instead):
SKIP_NOT_AN_OPTION = "answer_not_an_option"  # a classification answer that is no offered letter ("T")
SKIP_SEVERAL_ANSWERS = "several_answers_single_label"  # several letters ("A B") on a single-label question

SKIP_REASONS = (
    SKIP_MISSING_IMAGE,
    SKIP_CORRUPT_IMAGE,
    SKIP_EMPTY_ANSWER,
    SKIP_DUPLICATE,
    SKIP_UNKNOWN_TASK,
    SKIP_INVALID_RECORD,
    SKIP_UNPARSABLE_ANSWER,
    SKIP_UNREADABLE_FILE,
    SKIP_NOT_AN_OPTION,
    SKIP_SEVERAL_ANSWERS,
)
NOISE_REASONS = (SKIP_NOT_AN_OPTION, SKIP_SEVERAL_ANSWERS)  # skipped by default, kept with --keep_noisy


def images_of(record: dict) -> list[str]:
    """The image paths of a converted record as a list (``image`` may be a string or a list)."""
    img = record.get("image")
    if img is None:
        return []
    return [img] if isinstance(img, str) else list(img)


def raw_folder_of(record: dict) -> str:
    """The raw folder a converted record came from, as reports name it: ``validation-public``,
    ``validation-hidden _withGT`` (the organisers' labelled copies), ``training``...; ``unknown folder``
    for records converted before ``meta.source_split_folder`` existed."""
    meta = record.get("meta") or {}
    folder = str(meta.get("source_split_folder") or "unknown folder")
    return f"{folder} _withGT" if folder == "validation-hidden" and meta.get("has_answer") else folder


def describe_records(records: list[dict]) -> dict[str, Any]:
    """What a list of converted records is, for logs and reports: ``{"n", "splits": {split: n}, "folders":
    {raw folder: n}, "datasets": {dataset: n}, "text"}``, ``text`` one line such as ``96 converted records of
    split val (validation-public 90, validation-hidden _withGT 6), 4 datasets`` (records without ``meta``, a
    custom JSON file's: ``12 records, 1 dataset``)."""
    splits: dict[str, int] = {}
    folders: dict[str, int] = {}
    datasets: dict[str, int] = {}

    def count(counts: dict[str, int], key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    n_meta = 0
    for record in records:
        meta = record.get("meta") or {}
        n_meta += bool(meta)
        count(datasets, str(meta.get("dataset") or (record.get("_source") or {}).get("dataset") or "unknown"))
        count(splits, str(meta.get("split") or "unknown"))
        count(folders, raw_folder_of(record))
    text = f"{len(records)} {'converted records' if n_meta == len(records) else 'records'}"
    if n_meta:
        where = ", ".join(f"{folder} {n}" for folder, n in folders.items())
        text += f" of split {', '.join(splits)} ({where})"
    text += f", {len(datasets)} dataset{'s' if len(datasets) != 1 else ''}"
    return {"n": len(records), "splits": splits, "folders": folders, "datasets": datasets, "text": text}


# ----------------------------------------------------------------------------------------------------------
# The structure of a converted record: one validator for conversion, the data check and the training code
# ----------------------------------------------------------------------------------------------------------

# Kinds of structural problem of a converted record (what :func:`record_problems` reports). The first four are
# shape problems: the record's images or turns cannot be read, so its content is not checked.
NOT_AN_OBJECT = "not_an_object"  # the record is not a JSON object
MISSING_KEYS = "missing_keys"  # 'image' (where images are required) or 'conversations' is absent
BAD_IMAGE_FIELD = "bad_image_field"  # 'image' is neither a non-empty path nor a list of them
BAD_CONVERSATIONS = "bad_conversations"  # not alternating human/gpt turns, from a question to an answer
TAG_MISMATCH = "tag_mismatch"  # the human turns hold a different number of <image> tags than there are images
TAG_IN_ANSWER = "tag_in_answer"  # a gpt turn holds an <image> tag
EMPTY_ANSWER = "empty_answer"  # a labelled record has a gpt turn with an empty (or blank) value

SHAPE_PROBLEMS = (NOT_AN_OBJECT, MISSING_KEYS, BAD_IMAGE_FIELD, BAD_CONVERSATIONS)

_HUMAN, _GPT = "human", "gpt"
_IMAGES_RULE = "'image' must be a non-empty path or a non-empty list of paths"
_OPTIONAL_IMAGES_RULE = "'image' must be a non-empty path or a list of non-empty paths"
_CONVERSATIONS_RULE = "'conversations' must be a list of at least two turns"
_TURN_RULE = "{'from': 'human' | 'gpt', 'value': <text>}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _image_field_ok(image: Any, required: bool) -> bool:
    if image is None:
        return not required
    paths = [image] if isinstance(image, str) else image
    if not isinstance(paths, list) or (required and not paths):
        return False
    return all(isinstance(p, str) and p for p in paths)


def _turns_problem(turns: Any) -> str | None:
    """Why ``conversations`` is not alternating human/gpt turns from a human question to a gpt answer."""
    if not isinstance(turns, list) or not turns:
        return f"'conversations' must be a non-empty list of turns, got {_short(turns)}"
    for k, turn in enumerate(turns):
        if (
            not isinstance(turn, dict)
            or turn.get("from") not in (_HUMAN, _GPT)
            or not isinstance(turn.get("value"), str)
        ):
            return f"conversation turn {k} must be {_TURN_RULE}, got {_short(turn)}"
        expected = _HUMAN if k % 2 == 0 else _GPT
        if turn["from"] != expected:
            return f"conversations[{k}].from is {turn['from']!r}, expected {expected!r} (turns alternate human/gpt)"
    if len(turns) == 1:
        return "the conversation has no gpt turn: there is no answer"
    if len(turns) % 2:
        return "the conversation must end with a gpt turn"
    return None


def human_image_tags(record: dict) -> int:
    """How many ``<image>`` tags the human turns of a well-shaped record hold."""
    return sum(t["value"].count(IMAGE_TAG) for t in record["conversations"] if t["from"] == _HUMAN)


def record_problems(record: Any, *, labelled: bool, images_required: bool = True) -> list[tuple[str, str]]:
    """Every structural problem of a converted record, as ``(kind, detail)`` pairs; empty when it is well formed.

    The rules are those of the official Qwen3-VL finetune format (the module docstring): ``image`` is a non-empty
    path or a non-empty list of paths; ``conversations`` is a list of ``{"from": "human" | "gpt", "value":
    <text>}`` turns that alternate human, gpt, ..., starting with the human question and ending with the gpt
    answer; the human turns hold one ``<image>`` tag per image and the gpt turns none.

    Shape problems (kinds in :data:`SHAPE_PROBLEMS`) come first, at most one per field (``image``,
    ``conversations``; a record that is not an object has only that one). The content checks (tags, answers)
    run only on a record whose shape is right, so the list holds shape problems or content problems, never both.

    ``labelled``: a gpt turn with an empty or blank value is a problem (:data:`EMPTY_ANSWER`); inference inputs
    (``meta.has_answer`` false) carry ``""`` answers by design. ``images_required=False`` accepts a text-only
    record (no ``image``, ``null`` or an empty list), as the training code does; converted FLARE25 records always
    have images. Image files (existence, decoding, absolute paths) and the answers' content are the callers'
    checks.
    """
    if not isinstance(record, dict):
        return [(NOT_AN_OBJECT, f"record is a JSON {type(record).__name__}, expected an object")]
    problems: list[tuple[str, str]] = []
    rule = _IMAGES_RULE if images_required else _OPTIONAL_IMAGES_RULE
    if images_required and "image" not in record:
        problems.append((MISSING_KEYS, rule))
    elif not _image_field_ok(record.get("image"), images_required):
        problems.append((BAD_IMAGE_FIELD, rule))
    if "conversations" not in record:
        problems.append((MISSING_KEYS, _CONVERSATIONS_RULE))
    else:
        turns_problem = _turns_problem(record["conversations"])
        if turns_problem:
            problems.append((BAD_CONVERSATIONS, turns_problem))
    if problems:
        return problems
    turns = record["conversations"]
    n_tags, n_images = human_image_tags(record), len(images_of(record))
    if n_tags != n_images:
        problems.append(
            (TAG_MISMATCH, f"{n_tags} {IMAGE_TAG} tag(s) in the human turn(s) but {n_images} image(s)")
        )
    tagged = [k for k, t in enumerate(turns) if t["from"] == _GPT and IMAGE_TAG in t["value"]]
    if tagged:
        problems.append(
            (TAG_IN_ANSWER, f"gpt turn(s) {tagged} hold an {IMAGE_TAG} tag; tags belong in the human turns")
        )
    empty = [k for k, t in enumerate(turns) if t["from"] == _GPT and not t["value"].strip()]
    if empty and labelled:
        problems.append((EMPTY_ANSWER, f"gpt turn(s) {empty} of a labelled record hold an empty answer"))
    return problems
