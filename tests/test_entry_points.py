"""Every console command declared in pyproject.toml resolves to a callable, and no file of the project edits
sys.path to find the project (it is installed)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_console_commands_resolve_to_main_functions():
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]  # tomllib needs Python 3.11
    scripts = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"$', section, flags=re.MULTILINE))
    assert {"flare-convert", "flare-train", "flare-evaluate", "flare-monitor", "flare-check-data"} <= set(
        scripts
    )
    for command, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), command


def test_nothing_edits_sys_path():
    offenders = [
        str(p.relative_to(REPO))
        for folder in ("qwenvl", "data_conversion", "scripts")
        for p in (REPO / folder).rglob("*.py")
        if re.search(r"sys\.path\.(insert|append)", p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
