"""Check the training data before a run: annotations, images, and samples through the real training code path.

Three sections, each PASSED or FAILED, then the summary of the user's guide (``TEST SUMMARY``):

1. **Annotation Tests** (:mod:`.annotations`) - for every selected registered dataset: the file exists, is a
   JSON list of objects, each record has ``image`` and ``conversations`` (human and gpt turns alternating from
   the question to a non-empty answer), and the number of ``<image>`` tags in the human turns equals the number
   of images (:func:`qwenvl.flare.schema.record_problems`). Totals per dataset and overall.
2. **Image Tests** (:mod:`.images`) - every referenced image is checked for existence; a seeded sample
   (``--num_images``, spread across the datasets; ``--all_images`` for all) is decoded with the training loader
   (``load_rgb``). Missing and corrupt images are listed with the dataset and record that uses them.
3. **Model Tests** (:mod:`.samples`) - the processor is loaded (with the run's pixel limits), the datasets go
   through ``build_supervised_dataset`` exactly as ``train_qwen.py`` builds them (every record length-checked
   against ``--model_max_length``; over-long records counted, as training drops them), and ``--num_samples``
   samples are encoded by ``SupervisedDataset.__getitem__``: the ``<|image_pad|>`` count must equal
   ``sum(image_grid_thw.prod() // merge**2)``, the pixel rows ``sum(image_grid_thw.prod())``, the length the
   pre-check's estimate, and the supervised tokens must decode to the answer plus ``<|im_end|>``.

:mod:`.report` runs the sections in order and renders them and the summary; :mod:`.cli` is the command line
(``main``); :mod:`.config` holds the settings (:class:`DataCheckConfig`).

Which datasets are checked by default: see :mod:`.annotations`.
"""

from __future__ import annotations

from qwenvl.flare.schema import (  # the kinds of record problem the Annotation Tests report
    BAD_CONVERSATIONS,
    BAD_IMAGE_FIELD,
    EMPTY_ANSWER,
    MISSING_KEYS,
    NOT_AN_OBJECT,
    TAG_IN_ANSWER,
    TAG_MISMATCH,
)
from qwenvl.tools.data_check.annotations import (
    AnnotationResult,
    DatasetAnnotations,
    RecordIssue,
    check_annotation_file,
    check_annotation_record,
    resolve_check_datasets,
    run_annotation_tests,
)
from qwenvl.tools.data_check.cli import build_parser, main
from qwenvl.tools.data_check.config import CONVERT_COMMAND, DataCheckConfig
from qwenvl.tools.data_check.images import ImageProblem, ImageResult, run_image_tests
from qwenvl.tools.data_check.report import DataCheckResult, format_check_summary, run_data_checks
from qwenvl.tools.data_check.samples import (
    ModelResult,
    ProcessorUnavailable,
    SampleCheck,
    ensure_demo_model,
    load_processor_and_dataset,
    load_processor_offline_first,
    run_model_tests,
)

__all__ = [
    "BAD_CONVERSATIONS",
    "BAD_IMAGE_FIELD",
    "CONVERT_COMMAND",
    "EMPTY_ANSWER",
    "MISSING_KEYS",
    "NOT_AN_OBJECT",
    "TAG_IN_ANSWER",
    "TAG_MISMATCH",
    "AnnotationResult",
    "DataCheckConfig",
    "DataCheckResult",
    "DatasetAnnotations",
    "ImageProblem",
    "ImageResult",
    "ModelResult",
    "ProcessorUnavailable",
    "RecordIssue",
    "SampleCheck",
    "build_parser",
    "check_annotation_file",
    "check_annotation_record",
    "ensure_demo_model",
    "format_check_summary",
    "load_processor_and_dataset",
    "load_processor_offline_first",
    "main",
    "resolve_check_datasets",
    "run_annotation_tests",
    "run_data_checks",
    "run_image_tests",
    "run_model_tests",
]
