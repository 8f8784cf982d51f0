"""The wheel carries the dashboard: every file the page serves matches the package-data
patterns (a new folder under static/ would otherwise silently miss installed nodes)."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_dashboard_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["dashboard"]
    static = ROOT / "dashboard" / "static"
    files = [p.relative_to(ROOT / "dashboard").as_posix() for p in static.rglob("*") if p.is_file()]
    served = [f for f in files if not Path(f).name.startswith(".")]
    assert "static/index.html" in served and "static/js/core.js" in served
    missing = [f for f in served if not any(fnmatch(f, p) and f.count("/") == p.count("/") for p in patterns)]
    assert not missing, f"not in the wheel: {missing}"
