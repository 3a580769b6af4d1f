"""The served OpenAPI document tells the truth: every status the server answers is listed, errors in one shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.app import MAX_REQUEST_BYTES
from tests.serving.conftest import ThreadServer

KEY = "sk-openapi-test-key"


@pytest.fixture(scope="module")
def keyed(qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    keys = tmp_path_factory.mktemp("keys") / "keys"
    keys.write_text(KEY + "\n")
    with ThreadServer(qwen2_dir, max_num_seqs=4, max_model_len=64, max_queue=4, api_key_file=keys) as srv:
        yield srv


def _doc(srv: ThreadServer) -> dict:
    r = httpx.get(f"{srv.url}/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc: dict = r.json()
    return doc


def _statuses(doc: dict, path: str, method: str) -> set[str]:
    return set(doc["paths"][path][method]["responses"])


def test_document_lists_every_status_and_no_422(keyed: ThreadServer) -> None:
    doc = _doc(keyed)  # served without the API key, as vLLM does
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/completions", "/v1/chat/completions"):
        assert _statuses(doc, path, "post") == {"200", "400", "401", "404", "413", "429", "500", "503"}
        content = doc["paths"][path]["post"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", "text/event-stream"}
        assert doc["paths"][path]["post"]["security"] == [{"bearer": []}]
    assert _statuses(doc, "/v1/models", "get") == {"200", "401", "503"}
    assert _statuses(doc, "/ready", "get") == _statuses(doc, "/health", "get") == {"200", "503"}
    assert set(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert "security" not in doc["paths"]["/ready"]["get"]
    # Validation failures are 400 (OpenAI's answer), so FastAPI's 422 and its schema are gone from the document.
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    error = doc["paths"]["/v1/completions"]["post"]["responses"]["413"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorResponse"}
    assert doc["components"]["schemas"]["ErrorInfo"]["required"] == ["message", "type"]


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body: dict = r.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} == set(body["error"])
    return body["error"]


def test_each_documented_error_really_comes_in_the_error_shape(keyed: ThreadServer) -> None:
    url, auth = keyed.url, {"Authorization": f"Bearer {KEY}"}
    name = httpx.get(f"{url}/v1/models", headers=auth).json()["data"][0]["id"]
    body = {"model": name, "prompt": "hi", "max_tokens": 4}
    assert _error(httpx.post(f"{url}/v1/completions", json=body), 401)["code"] == "invalid_api_key"
    assert _error(httpx.post(f"{url}/v1/completions", json={**body, "model": "other"}, headers=auth),
                  404)["code"] == "model_not_found"
    bad = _error(httpx.post(f"{url}/v1/completions", json={**body, "temperature": "hot"}, headers=auth), 400)
    assert bad["param"] == "temperature"  # FastAPI would have said 422
    too_long = _error(httpx.post(f"{url}/v1/completions", json={**body, "max_tokens": 1000}, headers=auth), 400)
    assert "maximum context length" in too_long["message"]
    # 413 by Content-Length, before the body is read ...
    big = b'{"prompt": "' + b"x" * MAX_REQUEST_BYTES + b'"}'
    r = httpx.post(f"{url}/v1/completions", content=big, headers={**auth, "Content-Type": "application/json"})
    assert _error(r, 413)["code"] == "request_too_large"

    # ... and while a chunked body (no Content-Length) arrives.
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(MAX_REQUEST_BYTES // (1 << 20) + 1):
            yield b"x" * (1 << 20)
        yield b'"}'

    r = httpx.post(f"{url}/v1/completions", content=chunks(), headers={**auth, "Content-Type": "application/json"})
    assert _error(r, 413)["code"] == "request_too_large"
    # the server still serves
    assert httpx.post(f"{url}/v1/completions", json=body, headers=auth).status_code == 200
