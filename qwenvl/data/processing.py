"""One converted record -> model inputs: chat messages, token ids, labels, pixels and mRoPE position ids.

The text is rendered with the processor's own chat template, exactly as inference renders a prompt
(``apply_chat_template(..., tokenize=False)`` then ``processor(text=..., images=...)``), so training and
generation see the same tokens. Labels supervise only what the assistant says: each assistant turn's content
tokens and its closing ``<|im_end|>``; the system/user turns, the ``<|im_start|>assistant\\n`` headers and the
newline the template writes after ``<|im_end|>`` are ``-100``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from qwenvl.data.rope import mrope_position_ids
from qwenvl.flare.pixels import ImageBudget
from qwenvl.flare.schema import IMAGE_TAG, record_problems
from qwenvl.model.loading import image_token_count

IGNORE_INDEX = -100
ASSISTANT_HEADER = "<|im_start|>assistant\n"
IM_END = "<|im_end|>"


# ------------------------------------------------------------------------------------------- messages
def record_images(record: dict) -> list[str]:
    """The image paths of a record as a list; ``ValueError`` when ``image`` is neither a string nor a list of
    non-empty strings (a missing ``image`` means a text-only record)."""
    img = record.get("image")
    if img is None:
        return []
    paths = [img] if isinstance(img, str) else img
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ValueError(f"'image' must be a path or a list of paths, got {img!r}")
    return list(paths)


def _user_content(text: str) -> list[dict[str, str]]:
    """Split a human turn on ``<image>`` tags: an image item where each tag was, the text between the tags
    stripped of surrounding whitespace and newlines, empty pieces dropped."""
    content: list[dict[str, str]] = []
    for k, piece in enumerate(text.split(IMAGE_TAG)):
        if k > 0:
            content.append({"type": "image"})
        piece = piece.strip()
        if piece:
            content.append({"type": "text", "text": piece})
    return content


def record_to_messages(record: dict) -> list[dict]:
    """Chat messages (``role`` user/assistant, ``content`` a list of items) for a converted record.

    Each ``<image>`` tag of a human turn becomes a ``{"type": "image"}`` item at the tag's place; multi-turn
    conversations keep their order. Raises ``ValueError`` naming every problem
    :func:`qwenvl.flare.schema.record_problems` finds (turns that do not alternate human/gpt from a question to
    an answer, a number of tags that differs from the number of images, a tag in a gpt turn, ...). A record
    without images is a text-only record; an empty answer is accepted (inference inputs carry one).
    """
    problems = record_problems(record, labelled=False, images_required=False)
    if problems:
        details = "; ".join(detail for _kind, detail in problems)
        raise ValueError(f"{details} (the record format: qwenvl/flare/schema.py)")
    messages = []
    for turn in record["conversations"]:
        if turn["from"] == "human":
            messages.append({"role": "user", "content": _user_content(turn["value"])})
        else:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": turn["value"]}]})
    return messages


def render_text(messages: list[dict], processor: Any) -> str:
    """The chat-template text of ``messages`` (one ``<|image_pad|>`` per image, not yet expanded)."""
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    return text[0] if isinstance(text, list) else text


# --------------------------------------------------------------------------------------------- labels
def assistant_labels(input_ids: torch.Tensor, tokenizer: Any, n_assistant_turns: int) -> torch.Tensor:
    """Labels for ``input_ids`` (1-D): after each ``<|im_start|>assistant\\n`` header, the tokens up to and
    including the next ``<|im_end|>`` keep their ids; every other position is ``-100``.

    Raises ``ValueError`` when the headers found differ from ``n_assistant_turns`` or a turn is unterminated.
    """
    header = tokenizer.encode(ASSISTANT_HEADER, add_special_tokens=False)
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    ids = input_ids.tolist()
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    n_found, i, n = 0, 0, len(ids)
    while i <= n - len(header):
        if ids[i] != header[0] or ids[i : i + len(header)] != header:
            i += 1
            continue
        start = i + len(header)
        try:
            end = ids.index(im_end, start)
        except ValueError:
            raise ValueError(f"assistant turn {n_found} (token {start}) has no closing {IM_END}") from None
        labels[start : end + 1] = input_ids[start : end + 1]
        n_found += 1
        i = end + 1
    if n_found != n_assistant_turns:
        raise ValueError(
            f"found {n_found} assistant header(s) {ASSISTANT_HEADER!r} in the rendered text, expected "
            f"{n_assistant_turns}; the chat template does not render assistant turns as Qwen3-VL's does"
        )
    return labels


# ------------------------------------------------------------------------------------------- encoding
def image_size_kwargs(budget: ImageBudget | None) -> dict[str, Any]:
    """The processor-call keywords that resize images to ``budget`` (none: the processor's own limits)."""
    return {"size": budget.processor_size()} if budget is not None else {}


def encode_record(
    record: dict, processor: Any, images: Sequence[Image.Image], budget: ImageBudget | None = None
) -> dict[str, torch.Tensor]:
    """Tokens, labels, pixels and mRoPE ids for one record whose images are already loaded (in record order),
    the images resized within ``budget`` (default: the processor's own pixel limits).

    Returns ``input_ids`` ``(L,)``, ``labels`` ``(L,)``, ``position_ids`` ``(3, L)`` and, when the record has
    images, ``pixel_values`` ``(patches, C*T*P*P)`` and ``image_grid_thw`` ``(n_images, 3)``.
    """
    messages = record_to_messages(record)
    n_images = sum(item["type"] == "image" for m in messages for item in m["content"])
    if len(images) != n_images:
        raise ValueError(f"the record needs {n_images} image(s), {len(images)} were given")
    text = render_text(messages, processor)
    batch = processor(
        text=[text],
        images=list(images) or None,
        return_tensors="pt",
        **image_size_kwargs(budget if images else None),
    )
    input_ids = batch["input_ids"][0].long()
    grid = batch.get("image_grid_thw") if images else None
    n_turns = sum(m["role"] == "assistant" for m in messages)
    out = {
        "input_ids": input_ids,
        "labels": assistant_labels(input_ids, processor.tokenizer, n_turns),
        "position_ids": mrope_position_ids(
            input_ids, grid, processor.image_token_id, processor.image_processor.merge_size
        ),
    }
    if images:
        out["pixel_values"] = batch["pixel_values"]
        out["image_grid_thw"] = grid.long()
    return out


def text_token_count(text: str, processor: Any) -> int:
    """Tokens of rendered chat text before the processor expands each ``<|image_pad|>``."""
    return len(processor.tokenizer(text)["input_ids"])


def check_labels(record: dict, processor: Any) -> None:
    """Raise ``ValueError`` when the record's assistant turns cannot be found in its tokens, e.g. an answer
    that starts with a newline, which BPE merges into the ``<|im_start|>assistant\\n`` header: such a record
    would be skipped at every epoch. No pixel is decoded (the image placeholders are not expanded)."""
    messages = record_to_messages(record)
    ids = processor.tokenizer(render_text(messages, processor), return_tensors="pt")["input_ids"][0]
    n_turns = sum(m["role"] == "assistant" for m in messages)
    try:
        assistant_labels(ids, processor.tokenizer, n_turns)
    except ValueError as e:
        starts = [t["value"][:1] for t in record["conversations"] if t["from"] != "human"]
        hint = (
            " (an answer starts with a newline: strip it)" if any(c in "\r\n" and c for c in starts) else ""
        )
        raise ValueError(f"the labels cannot be encoded: {e}{hint}") from None


def visual_token_counts(
    image_sizes: Sequence[tuple[int, int]], processor: Any, budget: ImageBudget | None = None
) -> list[int]:
    """The visual tokens each image of ``(width, height)`` becomes within ``budget`` (default: the
    processor's own limits), without decoding any pixels."""
    return [image_token_count(int(h), int(w), processor, budget) for w, h in image_sizes]


def estimate_length(
    record: dict, processor: Any, image_sizes: Sequence[tuple[int, int]], budget: ImageBudget | None = None
) -> int:
    """The exact ``len(encode_record(..., budget)["input_ids"])`` without decoding any pixels.

    ``image_sizes`` are the displayed ``(width, height)`` of the record's images, in order (what
    ``read_image_size`` returns and what ``meta.image_sizes`` stores). Raises ``ValueError`` like
    :func:`record_to_messages`, or when the number of sizes differs from the number of images.
    """
    messages = record_to_messages(record)
    n_images = sum(item["type"] == "image" for m in messages for item in m["content"])
    if len(image_sizes) != n_images:
        raise ValueError(f"the record has {n_images} image(s) but {len(image_sizes)} size(s) were given")
    length = text_token_count(render_text(messages, processor), processor)
    # each image's one placeholder is expanded into its visual tokens
    return length + sum(n - 1 for n in visual_token_counts(image_sizes, processor, budget))
