"""docs/api.md cannot drift from the OpenAPI document: every route it names exists, and every
operation of the document is named there (``METHOD /path`` in backticks; path parameters
may be named differently, e.g. ``{t}`` for ``{tenant_id}``)."""

from __future__ import annotations

import re
from pathlib import Path

from memorose.api.openapi import document

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
_ROUTE = re.compile(r"`((?:GET|POST|PUT|PATCH|DELETE)(?:\|(?:GET|POST|PUT|PATCH|DELETE))*)\s+(/[^`\s?]*)")


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}|<[^>]*>", "{}", path).rstrip("/") or "/"


def in_docs(doc: Path = DOC) -> set[tuple[str, str]]:
    text = re.sub(r"\s+", " ", doc.read_text())
    out = set()
    for methods, path in _ROUTE.findall(text):
        for method in methods.split("|"):
            out.add((method, _shape(path)))
    return out


def in_document() -> set[tuple[str, str]]:
    return {(m.upper(), _shape(p)) for p, ops in document()["paths"].items() for m in ops}


def test_every_documented_route_exists() -> None:
    extra = sorted(in_docs() - in_document() - {("GET", "/dashboard"), ("GET", "/docs")})
    assert not extra, f"docs/api.md names routes the OpenAPI document lacks: {extra}"


def test_every_route_is_documented() -> None:
    missing = sorted(in_document() - in_docs())
    assert not missing, f"docs/api.md does not name: {missing}"


def test_the_readme_summary_names_only_real_routes() -> None:
    """The README's table is a summary (not every route), but never a stale one."""
    extra = sorted(in_docs(ROOT / "README.md") - in_document() - {("GET", "/dashboard")})
    assert not extra, f"README.md names routes the OpenAPI document lacks: {extra}"
