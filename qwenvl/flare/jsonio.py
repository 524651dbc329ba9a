"""JSON files written atomically and JSON lists read with errors that name the file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2, default=None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically: a temporary file in the same folder, then ``os.replace``.

    A reader never sees a half-written file, and an interrupted run leaves the previous version intact.
    ``default`` is passed to ``json.dump`` (e.g. ``str`` for values JSON cannot represent). Conversion,
    training and evaluation write their JSON files through this function.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, ensure_ascii=False, default=default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
