"""The prompt rule of the box task types: a question answered on Qwen3-VL's 0-1000 grid says so.

FLARE25 box questions may ask for "pixel coordinates", while the converter trains box answers on the 0-1000
grid (``box_format`` ``qwen1000``): the model would read one convention and be taught another. With the grid,
:func:`grid_prompt` rewrites a pixel-coordinate instruction into the grid convention, or, when the question
states no convention, appends :data:`GRID_SENTENCE`; a question that already names the 0-1000 grid, and every
question with ``box_format`` ``pixel`` (pixel answers), stays verbatim. Detection and instance detection both
answer :meth:`~qwenvl.flare.tasks.base.TaskType.prompt` and ``prompt_rule`` with it, so training, evaluation
and the submission show the model the same text for the same question.
"""

from __future__ import annotations

import re

from qwenvl.flare.schema import BOX_QWEN1000, PROMPT_VERBATIM

BOX_GRID_REWRITE = "box_grid_rewrite"  # a pixel-coordinate instruction rewritten to the grid
BOX_GRID_APPEND = "box_grid_append"  # GRID_SENTENCE appended to a question that states no convention

GRID_PHRASE = "as integers on a 0-1000 grid relative to the image width and height"
GRID_SENTENCE = "Give box coordinates as integers on a 0-1000 grid relative to the image width and height."

# "in pixel coordinates", "as pixels", "using the original image pixel values", ... -> GRID_PHRASE
_PIXEL_INSTRUCTION_RE = re.compile(
    r"\b(?:in|as|using|with)\s+(?:the\s+)?(?:original\s+)?(?:image\s+)?(?:absolute\s+)?"
    r"pixel(?:s|\s+coordinates|\s+units|\s+values)\b",
    re.IGNORECASE,
)
# a bare "pixel coordinates" ("Return pixel coordinates ...") -> "0-1000 grid coordinates (...)"
_PIXEL_COORDINATES_RE = re.compile(r"\bpixel\s+coordinates\b", re.IGNORECASE)
_GRID_STATED_RE = re.compile(r"\b0\s*(?:-|\u2013|to)\s*1000\b")


def grid_prompt(question: str, box_format: str | None) -> tuple[str, str]:
    """``(prompt, rule)`` of a box question: the text the model is shown and the rule's name
    (:data:`BOX_GRID_REWRITE`, :data:`BOX_GRID_APPEND` or ``verbatim``)."""
    if box_format != BOX_QWEN1000 or _GRID_STATED_RE.search(question):
        return question, PROMPT_VERBATIM
    text, n = _PIXEL_INSTRUCTION_RE.subn(GRID_PHRASE, question)
    text, m = _PIXEL_COORDINATES_RE.subn(
        "0-1000 grid coordinates (relative to the image width and height)", text
    )
    if n or m:
        return text, BOX_GRID_REWRITE
    return f"{question.rstrip()} {GRID_SENTENCE}", BOX_GRID_APPEND
