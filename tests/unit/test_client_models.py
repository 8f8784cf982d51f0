"""The SDK's results and the API's models are one description: every field the SDK reads is
a field of the response model, results convert to those models, and a batch can be built
from the request model."""

from __future__ import annotations

from dataclasses import fields

import pytest

from memorose.client import ConsolidateResult, IngestResult, MemoryItem, RetrieveResult, TenantStatus, api
from memorose.client import _core as core

RESULTS = [IngestResult, MemoryItem, RetrieveResult, TenantStatus, ConsolidateResult]


@pytest.mark.parametrize("result", RESULTS)
def test_sdk_fields_are_api_fields(result: type) -> None:
    known = set(result.api_model.model_fields)
    if result is MemoryItem:  # a retrieval result or a listed memory
        known |= set(api.MemoryOut.model_fields)
    names = {f.name for f in fields(result)} - {"extra"}
    assert names <= known, f"{result.__name__} reads fields the API models lack: {names - known}"


def test_results_convert_to_the_api_models() -> None:
    body = {
        "results": [{"id": "m1", "layer": "L1", "content": "x", "score": 1.5, "passage": ["m1"]}],
        "took_ms": 2,
    }
    model = RetrieveResult.from_dict(body).to_model()
    assert isinstance(model, api.RetrieveResponse)
    assert model.results[0].id == "m1" and model.model_dump()["results"][0]["passage"] == ["m1"]
    ingest = IngestResult.from_dict({"event_id": "e1", "tenant_id": "t", "stream_id": "s", "seq": 3})
    assert ingest.to_model() == api.IngestResponse(event_id="e1", tenant_id="t", stream_id="s", seq=3)


def test_a_batch_from_request_models() -> None:
    event = api.EventIn(stream_id="s", content="hello", metadata={"k": 1})
    request = core.ingest_batch("t", [event])
    [sent] = request.json["events"]
    assert sent["content"] == "hello" and sent["event_id"].startswith("ev-") and "timestamp" not in sent
    assert api.parse(api.IngestBatchRequest, request.json).events[0].metadata == {"k": 1}


def test_bodies_decode_with_orjson_and_what_it_refuses_with_the_standard_library() -> None:
    assert core.decode_json(b'{"results": [{"score": 0.5}], "took_ms": 1.2}') == {
        "results": [{"score": 0.5}],
        "took_ms": 1.2,
    }
    odd = core.decode_json(b'{"x": NaN}')  # not JSON, but what Python's json writes
    assert odd["x"] != odd["x"]
    assert core.decode_json(b"<html>bad gateway</html>") == {
        "error": {"code": "bad_response", "message": "<html>bad gateway</html>"}
    }
