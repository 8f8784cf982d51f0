"""/retrieve's answer encoding (node/routes/retrieval.py): orjson, and the standard encoder
for what orjson refuses, so an odd value in metadata never turns an answer into an error."""

from __future__ import annotations

import json

from node.routes.retrieval import json_answer

ANSWER = {
    "results": [{"id": "m1", "content": "Caroline: Hey Mel! ☀", "score": 2.537138, "metadata": {"n": 3}}],
    "took_ms": 20.61,
}


def test_the_answer_is_json_of_the_same_values() -> None:
    response = json_answer(ANSWER)
    assert response.content_type == "application/json" and response.charset == "utf-8"
    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == ANSWER


def test_an_integer_orjson_cannot_write_falls_back_to_the_standard_encoder() -> None:
    answer = {"results": [{"id": "m1", "metadata": {"big": 2**70}}], "took_ms": 1.0}
    response = json_answer(answer)
    assert response.status == 200
    assert json.loads(response.text or "") == answer
