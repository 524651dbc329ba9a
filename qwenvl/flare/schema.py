"""The converted-record format: the one contract between conversion and everything downstream.

A converted file ``<output_dir>/<dataset>_<split>.json`` is a JSON list of records in the format the official
Qwen3-VL finetune code reads, plus a ``meta`` block that keeps each record's origin::

    {
      "image": "/abs/path/imagesTr/x.jpg",            # or a list of absolute paths, in the raw order
      "conversations": [
        {"from": "human", "value": "<image>\\n<original Question>"},   # one "<image>\\n" per image, in order
        {"from": "gpt", "value": "<answer string>"}                    # "" for inference inputs
      ],
      "meta": {
        "dataset": "BUSI-det",                # folder name
        "task_type": "detection",             # normalised (dataset_configs.TASK_TYPES)
        "modality": "Ultrasound",             # modality folder
        "split": "train",                     # train | val | val_hidden | test
        "source_split_folder": "training",    # raw folder it came from
        "source_file": "/abs/.../BUSI-det_questions_train.json",
        "source_index": 17,                   # index of the record in that file
        "image_name": "imagesTr/x.jpg",       # original ImageName (str or list), for challenge-format output
        "question": "...",                    # original Question
        "image_sizes": [[w, h]],              # original pixel size of each image, from its header
        "has_answer": true,                   # false for validation-hidden / testing inputs
        "box_format": "qwen1000"              # only for box tasks: "qwen1000" (0-1000 grid) or "pixel"
      }
    }

Image paths are absolute, so files work from any working directory; registry entries carry
``data_path: ""``. Answers are always strings: numbers are written as JSON, boxes as JSON lists.
"""

from __future__ import annotations

IMAGE_TAG = "<image>"

# Box coordinate systems a converted file may use (recorded per record in meta.box_format).
BOX_QWEN1000 = "qwen1000"
BOX_PIXEL = "pixel"

# Why a raw record was not converted (conversion_report.json "reason" values).
SKIP_MISSING_IMAGE = "missing_image"  # an image file (any of a multi-image record's) does not exist
SKIP_CORRUPT_IMAGE = "corrupt_image"  # an image file exists but does not decode
SKIP_EMPTY_ANSWER = "empty_answer"  # a labelled split (train/val) record with an empty Answer
SKIP_DUPLICATE = "duplicate"  # repeats an earlier (ImageName, Question) pair of the same file
SKIP_UNKNOWN_TASK = "unknown_task_type"  # TaskType is not one of the seven FLARE25 task types
SKIP_INVALID_RECORD = "invalid_record"  # not an object, or a required field is missing / of the wrong type
SKIP_UNPARSABLE_ANSWER = "unparsable_answer"  # a box / number answer that cannot be parsed
SKIP_UNREADABLE_FILE = "unreadable_file"  # the whole question file is not valid JSON (file-level entry)

SKIP_REASONS = (
    SKIP_MISSING_IMAGE,
    SKIP_CORRUPT_IMAGE,
    SKIP_EMPTY_ANSWER,
    SKIP_DUPLICATE,
    SKIP_UNKNOWN_TASK,
    SKIP_INVALID_RECORD,
    SKIP_UNPARSABLE_ANSWER,
    SKIP_UNREADABLE_FILE,
)

REQUIRED_RAW_FIELDS = ("TaskType", "ImageName", "Question", "Answer")


def images_of(record: dict) -> list[str]:
    """The image paths of a converted record as a list (``image`` may be a string or a list)."""
    img = record.get("image")
    if img is None:
        return []
    return [img] if isinstance(img, str) else list(img)
