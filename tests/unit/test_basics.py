"""Configuration, codec, analysis, embedder and the package import rules."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memorose import commands
from memorose.config import load_settings
from memorose.errors import ConfigError
from memorose.providers.embeddings import load_embedder
from memorose.retrieval.text import analyze, query_terms

ROOT = Path(__file__).resolve().parents[2]


def test_settings_layering_toml_then_env_then_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "memorose.toml"
    config.write_text(
        "[consolidation]\ninterval_secs = 10\nbatch_size = 100\nentropy_threshold = 2.5\n"
        "similarity_threshold = 0.7\n[forgetting]\ndecay_half_life_days = 30\nmin_importance = 0.1\n"
    )
    monkeypatch.setenv("MEMOROSE_CONSOLIDATION__BATCH_SIZE", "50")
    settings = load_settings(config, node_id="n7")
    assert settings.consolidation.interval_secs == 10
    assert settings.consolidation.batch_size == 50
    assert settings.forgetting.decay_half_life_days == 30
    assert settings.node_id == "n7"


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("[consolidation]\nbatch_size = 0\n", "consolidation.batch_size"),
        ("[forgetting]\nmin_importance = 2\n", "forgetting.min_importance"),
        ("[consolidation]\nbatchsize = 3\n", "batchsize"),
        ('http = "nonsense"\n', "http"),
        ('peers = ["127.0.0.1:9000"]\n', "peers"),
        ("[consolidation\n", "not valid TOML"),
    ],
)
def test_bad_configuration_names_the_setting(tmp_path: Path, toml: str, fragment: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert fragment in str(info.value)


def test_cli_reports_configuration_errors_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[consolidation]\nbatch_size = -1\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "memorose.cli",
            "node",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MEMOROSE_ADMIN_KEY": "x"},
    )
    assert proc.returncode == 2
    assert "consolidation.batch_size" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_command_codec_round_trip_and_version_check() -> None:
    command = commands.ingest([{"tenant_id": "t", "events": []}], ingested_at=1.5)
    assert commands.decode(commands.encode(command)) == command
    with pytest.raises(commands.CodecError):
        commands.decode(b"\x02" + commands.encode(command)[1:])
    with pytest.raises(commands.CodecError):
        commands.encode({"type": "bogus"})


def test_analyzer_stems_and_queries_drop_stopwords() -> None:
    assert analyze("Running runners ran") == ["run", "runner", "ran"]
    assert query_terms("Where does the runner run?") == ["runner", "run"]
    assert analyze("café 東京") == ["café", "東京"]


def test_hashing_embedder_is_deterministic_across_processes() -> None:
    embedder = load_embedder("hashing", dim=64)
    here = embedder.embed(["Alice moved to Berlin"])[0]
    code = (
        "from memorose.providers.embeddings import load_embedder;"
        "print(list(load_embedder('hashing', dim=64).embed(['Alice moved to Berlin'])[0]))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert np.allclose(here, np.array(eval(there.stdout)), atol=1e-6)
    assert abs(float(np.linalg.norm(here)) - 1.0) < 1e-5
    related, unrelated = embedder.embed(["Alice relocated to Berlin", "quarterly tax filing deadline"])
    assert float(here @ related) > float(here @ unrelated)


def _imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(ROOT)), alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module.split(".")[0]))
    return found


def test_imports_flow_one_way() -> None:
    bad = [(f, m) for f, m in _imports("memorose") if m in ("node", "gateway", "pysyncobj")]
    bad += [(f, m) for f, m in _imports("gateway") if m in ("node", "pysyncobj")]
    bad += [(f, m) for f, m in _imports("dashboard") if m in ("memorose", "node", "gateway", "pysyncobj")]
    assert not bad, f"forbidden imports: {bad}"


def test_importing_the_library_starts_nothing() -> None:
    code = "import threading, memorose.cli, memorose.models, memorose.config; print(threading.active_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "1"


def test_shipped_example_config_is_valid() -> None:
    settings = load_settings(ROOT / "deploy" / "memorose.toml")
    assert settings.consolidation.interval_secs == 10
    assert settings.index.ann_threshold == 200000
