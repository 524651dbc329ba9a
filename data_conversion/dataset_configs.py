"""The FLARE25 dataset table, for ``from dataset_configs import FLARE_DATASETS`` run from inside
``data_conversion/`` (the training guide's form). It lives in :mod:`qwenvl.flare.datasets`."""

from qwenvl.flare.datasets import FLARE_DATASETS, STARTER_DATASETS, DatasetConfig, registry_name  # noqa: F401
