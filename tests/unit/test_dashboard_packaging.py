"""The wheel carries the dashboard: every file the page serves matches the package-data
patterns (a new folder under static/ would otherwise silently miss installed nodes), and the
npm libraries the Makefile copies into static/vendor/ are there (``make test`` builds them
first; a wheel built without them would have a page with no graph and no charts)."""

from __future__ import annotations

import logging
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from dashboard import server

ROOT = Path(__file__).resolve().parents[2]


def makefile_vendor_files() -> list[str]:
    """The file names of the Makefile's VENDOR_FILES (a backslash-continued list)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(r"^VENDOR_FILES\s*:=\s*(.+)$", text, re.MULTILINE)
    assert match, "VENDOR_FILES not found in the Makefile"
    return [Path(path).name for path in match.group(1).split()]


def test_every_dashboard_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["dashboard"]
    static = ROOT / "dashboard" / "static"
    files = [p.relative_to(ROOT / "dashboard").as_posix() for p in static.rglob("*") if p.is_file()]
    served = [f for f in files if not Path(f).name.startswith(".")]
    assert "static/index.html" in served and "static/js/core.js" in served
    missing = [f for f in served if not any(fnmatch(f, p) and f.count("/") == p.count("/") for p in patterns)]
    assert not missing, f"not in the wheel: {missing}"


def test_the_vendor_files_the_makefile_lists_are_built_and_known_to_the_server() -> None:
    names = makefile_vendor_files()
    assert sorted(names) == sorted(server.VENDOR_FILES)  # the start-up check looks for the same files
    vendor = ROOT / "dashboard" / "static" / "vendor"
    missing = [name for name in names if not (vendor / name).is_file()]
    assert not missing, f"{missing} missing from {vendor}: run `make` (npm ci) before building a wheel"
    assert server.missing_vendor_files() == []


def test_start_up_warns_when_the_vendor_folder_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server, "VENDOR_DIR", tmp_path / "vendor")
    with caplog.at_level(logging.WARNING, logger="dashboard.server"):
        server.warn_if_vendor_missing()
    assert "uPlot.iife.min.js" in caplog.text and "make" in caplog.text
