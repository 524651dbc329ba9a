"""A miniature FLARE25 2D tree with synthetic images, faithful to the real layout (the demo, tests, benchmarks).

The tree follows ``docs/data_format.md``: ``<root>/<split folder>/<Modality>/<dataset>/`` for all 19 datasets and
the four split folders, images under ``imagesTr`` / ``imagesVal`` / ``imagesTs``, and one question file per
folder holding exactly ``samples_per_split`` records. Every quirk a converter must cope with is present: mixed
``TaskType`` casing, free-text ``Modality``, three option styles, every answer encoding (letters, label names
joined by ``;`` or ``,``, pixel boxes, instance-id box objects, numbers written as JSON numbers or strings,
reports), multi-image records, images shared between records (iugc), awkward but valid image files (16-bit
grayscale, RGBA, palette, CMYK and EXIF-rotated JPEG), the ``IU_XRay_all_train.json`` file name variant and
the organisers' ``chestdr_questions_val_withGT.json``. The same seed gives byte-identical files.

Modules, each importing only those above it:

- ``image_files``: the seven on-disk image encodings, :class:`GenImage` and ``save_image``;
- ``specs``: :class:`DemoSpec` and ``DEMO_SPECS``, the per-dataset table (question text, labels, image
  geometry and colours, views, encodings);
- ``drawing``: image primitives (noisy backgrounds, class shapes and colours, non-overlapping boxes);
- ``builders``: one builder per task type in ``BUILDERS`` (keyed by the normalised task-type name), plus
  the builders of the two datasets that mix task types;
- ``layout``: defaults, folder and question-file names, the question-file writer;
- ``defects``: the six defects ``--with-defects`` seeds and the skip reasons they must produce;
- ``writing``: ``make_demo_dataset(...)``, which writes the tree.

``data_conversion/make_demo_dataset.py`` is the command line and re-exports the names tests and scripts use.
"""
