"""A change of embedding model is detected per memory and `admin reembed` re-derives it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import NodeStarter
from tests.providers.stub import GeminiStub

QUIET = {"consolidation": {"interval_secs": 3600}}


async def test_model_change_is_detected_and_reembedded(
    start: NodeStarter, stub: GeminiStub, tmp_path: Path
) -> None:
    data = tmp_path / "node"
    first, api = await start(data_dir=data, **QUIET)
    await api.ingest("acme", "Frank keeps bees on his allotment in Leeds", event_id="bees")
    await api.ingest("acme", "The quarterly report is due on 30 September", event_id="report")
    await api.consolidate("acme")
    await first.stop()

    # Same data, now with Gemini embeddings (through the stub): old vectors are stale.
    _, api = await start(
        data_dir=data,
        embeddings={"provider": "gemini", "api_key": "test-key", "base_url": stub.url},
        **QUIET,
    )
    status, dry = await api.post("/api/v1/admin/reembed", {"dry_run": True})
    assert status == 200
    assert dry["model"] == "gemini:gemini-embedding-001:384"
    assert dry["tenants"]["acme"] == {"stale": 2, "updated": 0}
    assert stub.calls("batchEmbedContents") == []

    status, done = await api.post("/api/v1/admin/reembed", {"tenant_id": "acme"})
    assert status == 200 and done["tenants"]["acme"] == {"stale": 2, "updated": 2}
    _, body = await api.get("/api/v1/memories?tenant_id=acme")
    assert {m["embedding_model"] for m in body["memories"]} == {"gemini:gemini-embedding-001:384"}
    results = await api.retrieve("acme", "Frank keeps bees on his allotment in Leeds")
    assert results[0]["source_event_ids"] == ["bees"]
    _, again = await api.post("/api/v1/admin/reembed", {"dry_run": True})
    assert again["tenants"]["acme"]["stale"] == 0

    tenant_key = await api.tenant_key("acme")
    status, _ = await api.with_key(tenant_key).post("/api/v1/admin/reembed", {})
    assert status == 403
