"""Ask a checkpoint one question about one or more images, as evaluation would.

The question goes through the same record -> prompt path as training and evaluation
(:func:`qwenvl.eval.generate.make_record`, :func:`~qwenvl.eval.generate.build_prompt`), with the checkpoint's
training pixel limits. For box tasks (``task_type`` detection / instance_detection, or boxes found in the
answer) the boxes are also given in pixels of the first image: the model speaks Qwen3-VL's 0-1000 grid
(``box_format="qwen1000"``, what the converter trains on); ``box_format="pixel"`` keeps them as written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenvl.eval.constrained import trained_vocabularies, with_answer_vocabulary
from qwenvl.eval.generate import Generator, as_generation, make_record
from qwenvl.flare.boxes import GRID, boxes_to_pixels
from qwenvl.flare.images import read_image_size
from qwenvl.flare.parsing import parse_boxes
from qwenvl.flare.pixels import BudgetPlan, dataset_key
from qwenvl.flare.schema import BOX_PIXEL, BOX_QWEN1000
from qwenvl.flare.tasks import TASKS, normalize_task_type


@dataclass
class InferenceResult:
    """The answer text, its parsed value (when a task type was given), and boxes in pixels of the first
    image (``None`` when the answer holds no boxes)."""

    text: str
    task_type: str | None
    parsed: Any
    boxes: Any
    image: str
    image_size: tuple[int, int]
    error: str | None = None


def answer_boxes(text: str, task_type: str | None) -> Any:
    """Boxes in an answer as written: per the task type for box tasks (``[]`` / ``{}`` when the answer lists
    none, ``None`` when it does not parse), else any bracketed four-number boxes (``None`` when there are
    none)."""
    task = TASKS.get(task_type or "")
    if task is not None and task.has_boxes:
        return task.parse(text)
    return parse_boxes(text) or None


def boxes_in_pixels(boxes: Any, size: tuple[int, int], box_format: str) -> Any:
    """Grid boxes -> pixels of an image of ``size`` (width, height); pixel boxes unchanged."""
    if boxes is None or box_format == BOX_PIXEL:
        return boxes
    return boxes_to_pixels(boxes, *size)


def infer_with(
    generator: Generator,
    images: Sequence[str | os.PathLike],
    question: str,
    task_type: str | None = None,
    box_format: str = BOX_QWEN1000,
    dataset: str | None = None,
    vocabularies: dict | None = None,
) -> InferenceResult:
    """Answer ``question`` about ``images`` with ``generator`` (a :class:`~qwenvl.eval.generate.BatchGenerator`
    or any stand-in); ``dataset`` (a FLARE name or a registered one) picks the image budget and the answer
    hints of that dataset, and ``vocabularies`` (a checkpoint's answer vocabularies) the vocabulary an option
    answer is written in (else the question's rule)."""
    if not images:
        raise ValueError("give at least one image")
    if box_format not in (BOX_QWEN1000, BOX_PIXEL):
        raise ValueError(f"box_format must be {BOX_QWEN1000!r} or {BOX_PIXEL!r}, got {box_format!r}")
    task = normalize_task_type(task_type) if task_type else None
    if task_type and task is None:
        raise ValueError(f"unknown task type {task_type!r}")
    for image in images:
        if not Path(image).expanduser().is_file():
            raise FileNotFoundError(f"image not found: {image}")
    record = make_record(images, question, task, box_format, dataset_key(dataset))
    record = with_answer_vocabulary([record], vocabularies)[0]  # option tasks: the answer's vocabulary
    generation = as_generation(generator([record])[0])
    first = str(Path(images[0]).expanduser())
    size = read_image_size(first)
    parsed = TASKS[task].parse(generation.text, question) if task else None
    boxes = None
    if task is None or TASKS[task].has_boxes:
        boxes = boxes_in_pixels(answer_boxes(generation.text, task), size, box_format)
    return InferenceResult(generation.text, task, parsed, boxes, first, size, generation.error)


def dataset_for_task(plan: BudgetPlan, task_type: str | None) -> str | None:
    """The dataset whose image budget a question of ``task_type`` gets when no dataset is named: of the
    datasets the plan names that ask ``task_type``, the one with the largest budget (an instance question is
    a chromosome question); ``None`` when none does."""
    from qwenvl.flare.datasets import FLARE_DATASETS

    asked = [n for n in plan.per_dataset if n in FLARE_DATASETS and task_type in FLARE_DATASETS[n].task_types]
    return max(asked, key=lambda n: plan.per_dataset[n].max_pixels, default=None)


def format_result(result: InferenceResult, box_format: str = BOX_QWEN1000) -> str:
    """What ``scripts/infer.py`` prints."""
    if result.error:
        return f"error: {result.error}"
    lines = [f"answer: {result.text}"]
    box_task = result.task_type is not None and TASKS[result.task_type].has_boxes
    if result.task_type and not box_task:
        lines.append(
            f"parsed ({result.task_type}): {result.parsed if result.parsed is not None else 'unparsable'}"
        )
    if result.boxes is not None and not result.boxes:
        lines.append("boxes: none (the answer lists no box)")
    elif result.boxes is not None:
        w, h = result.image_size
        unit = f"0-{GRID} grid -> pixels" if box_format == BOX_QWEN1000 else "pixels as written"
        lines.append(f"boxes in pixels of {result.image} ({w}x{h}, {unit}): {result.boxes}")
    elif box_task:
        lines.append("boxes: none could be read from the answer")
    return "\n".join(lines)


def infer(
    model_path: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    question: str,
    task_type: str | None = None,
    box_format: str = BOX_QWEN1000,
    max_new_tokens: int | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    free_decoding: bool = False,
    dataset: str | None = None,
    backend: str = "hf",
) -> InferenceResult:
    """Load ``model_path`` (its processor and training image budgets) with ``backend`` (hf or vllm:
    :func:`qwenvl.eval.backends.load_generator`) and answer one question; with a ``task_type`` the answer is
    held to that task's pattern unless ``free_decoding``. The image budget is ``dataset``'s, else that of the
    checkpoint's datasets of ``task_type`` (:func:`dataset_for_task`), else the checkpoint's global one."""
    from qwenvl.eval.backends import load_generator

    loaded = load_generator(
        model_path,
        backend,
        1,
        max_new_tokens,
        min_pixels,
        max_pixels,
        dtype,
        device,
        progress=False,
        free_decoding=free_decoding,
    )
    if dataset is None and task_type:
        dataset = dataset_for_task(loaded.pixel_plan, normalize_task_type(task_type))
    vocabularies = trained_vocabularies(model_path)
    return infer_with(loaded.generator, images, question, task_type, box_format, dataset, vocabularies)
