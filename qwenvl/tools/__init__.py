"""Operator tools of the training guide: the data-loading check and the training monitor.

* :mod:`qwenvl.tools.data_check` - ``scripts/test_data_loading.py``: annotation, image and model checks of the
  registered datasets through the training code path.
* :mod:`qwenvl.tools.monitor` - ``scripts/monitor_training.py``: progress, losses, ETA and machine load of a run,
  read from the files the training entry point writes into its output folder.

The submodules are not imported here: the monitor must start in a second, without torch or transformers.
"""
