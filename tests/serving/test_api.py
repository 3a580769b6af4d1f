"""The OpenAI-compatible API over real HTTP: the official `openai` client, errors, limits, auth, metrics."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.serving.conftest import ThreadServer


@pytest.fixture(scope="module")
def client(server: ThreadServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny-qwen2"]


def test_completion(client: openai.OpenAI, server: ThreadServer) -> None:
    r = client.completions.create(model="tiny-qwen2", prompt="Hello there", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.usage.total_tokens == r.usage.prompt_tokens + 8
    # Token-id prompts work too, and greedy decoding is deterministic over HTTP.
    ids = server.state.tokenizer.encode("Hello there")
    again = client.completions.create(model="tiny-qwen2", prompt=ids, max_tokens=8, temperature=0)
    assert again.choices[0].text == r.choices[0].text


def test_completion_stream(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny-qwen2", prompt="Hello there", max_tokens=10, temperature=0)
    chunks = list(client.completions.create(model="tiny-qwen2", prompt="Hello there", max_tokens=10,
                                            temperature=0, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10


def test_chat(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    r = client.chat.completions.create(model="tiny-qwen2", messages=messages, max_tokens=6, temperature=0)
    assert r.choices[0].message.role == "assistant" and r.usage.completion_tokens <= 6
    stream = client.chat.completions.create(model="tiny-qwen2", messages=messages, max_tokens=6, temperature=0,
                                            stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == r.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_sse_ends_with_done(server: ThreadServer) -> None:
    body = {"model": "tiny-qwen2", "prompt": "hi", "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return body["error"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "tiny-qwen2", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "tiny-qwen2", "prompt": "x", "max_tokens": "many"}, "max_tokens"),
        ({"model": "tiny-qwen2", "prompt": "x", "temperature": "hot"}, "temperature"),
        ({"model": "tiny-qwen2", "prompt": 42}, "prompt"),
        ({"model": "tiny-qwen2", "prompt": "word " * 1200}, "prompt"),  # longer than max_model_len (1024)
        ({"model": "tiny-qwen2", "prompt": "x", "max_tokens": 1100}, "max_tokens"),  # prompt + max_tokens > 1024
        ({"model": "tiny-qwen2", "prompt": [1, 2, 99999]}, "prompt"),  # token id outside the vocabulary
        ({"prompt": "x"}, "model"),
    ],
)
def test_bad_requests_get_400(server: ThreadServer, body: dict, param: str) -> None:
    r = httpx.post(f"{server.url}/v1/completions", json=body)
    assert r.status_code == 400
    err = error_of(r)
    assert err["type"] == "invalid_request_error" and err["param"] == param


def test_bad_json_and_bad_chat(server: ThreadServer) -> None:
    r = httpx.post(f"{server.url}/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and error_of(r)["type"] == "invalid_request_error"
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "tiny-qwen2", "messages": []})
    assert r.status_code == 400 and error_of(r)["param"] == "messages"
    r = httpx.post(f"{server.url}/v1/chat/completions",
                   json={"model": "tiny-qwen2", "messages": [{"role": "pirate", "content": "arr"}]})
    assert r.status_code == 400


def test_openai_client_sees_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.completions.create(model="gpt-4", prompt="x")
    assert nf.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny-qwen2", prompt="x", max_tokens=0)


def test_unknown_route_is_404_in_openai_shape(server: ThreadServer) -> None:
    r = httpx.get(f"{server.url}/v1/engines")
    assert r.status_code == 404 and error_of(r)["type"] == "not_found_error"


def test_client_disconnect_cancels_and_frees_kv(server: ThreadServer) -> None:
    engine = server.state.engine
    assert engine is not None
    body = {"model": "tiny-qwen2", "prompt": "the rack", "max_tokens": 1000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body) as r:
        seen = 0
        for line in r.iter_lines():
            seen += bool(line)
            if seen == 3:
                assert engine.num_running == 1 and engine.kv_cache_bytes() > 0
                break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 10
    while (engine.num_running or engine.kv_cache_bytes()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.num_running == 0 and engine.kv_cache_bytes() == 0
    assert not server.state.inflight


def test_non_streaming_client_disconnect_cancels(server: ThreadServer) -> None:
    engine = server.state.engine
    assert engine is not None
    def aborted() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        series = 'llmrack_request_success_total{finished_reason="abort"'
        line = next(x for x in text.splitlines() if x.startswith(series))
        return float(line.rpartition(" ")[2])

    before = aborted()
    body = {"model": "tiny-qwen2", "prompt": "the rack", "max_tokens": 1000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=httpx.Timeout(5.0, read=0.3))
    # The server polls for the disconnect while it waits for the result, then aborts the request.
    deadline = time.monotonic() + 10
    while (engine.num_running or server.state.inflight) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.num_running == 0 and engine.kv_cache_bytes() == 0 and not server.state.inflight
    assert aborted() == before + 1


def test_metrics_after_requests(server: ThreadServer, client: openai.OpenAI) -> None:
    client.completions.create(model="tiny-qwen2", prompt="Hello", max_tokens=4)
    text = httpx.get(f"{server.url}/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)

    def total(prefix: str) -> float:
        return sum(v for k, v in samples.items() if k.startswith(prefix))

    for hist in ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
                 "request_queue_time_seconds"):
        assert total(f"llmrack_{hist}_count") > 0, hist
    for gauge in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_ratio"):
        assert any(k.startswith(f"llmrack_{gauge}") for k in samples), gauge
    assert total("llmrack_prompt_tokens_total") > 0 and total("llmrack_generation_tokens_total") > 0
    assert samples['llmrack_request_success_total{finished_reason="length",model_name="tiny-qwen2"}'] > 0
    assert total("llmrack_request_failure_total") > 0  # the 400s above
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}


@pytest.fixture(scope="module")
def guarded(qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text("# operators\nsk-first-key\n\nsk-second-key\n")
    with ThreadServer(qwen2_dir, api_key_file=keys, max_num_seqs=1, max_queue=1, max_model_len=512) as srv:
        yield srv


def test_auth(guarded: ThreadServer) -> None:
    url = f"{guarded.url}/v1/models"
    assert httpx.get(url).status_code == 401
    assert error_of(httpx.get(url))["type"] == "authentication_error"
    assert httpx.get(url, headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Basic sk-first-key"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer sk-second-key"}).status_code == 200
    for open_path in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{guarded.url}{open_path}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="nope", max_retries=0).models.list()


def test_queue_full_is_429(guarded: ThreadServer) -> None:
    headers = {"Authorization": "Bearer sk-first-key"}
    body = {"model": "tiny-qwen2", "prompt": "the rack", "max_tokens": 400, "ignore_eos": True, "stream": True}
    engine = guarded.state.engine
    assert engine is not None
    results: list[int] = []

    def long_request() -> None:
        with httpx.stream("POST", f"{guarded.url}/v1/completions", json=body, headers=headers, timeout=60) as r:
            results.append(r.status_code)
            for _ in r.iter_lines():
                pass

    threads = [threading.Thread(target=long_request) for _ in range(2)]
    threads[0].start()
    while engine.num_running < 1:
        time.sleep(0.01)
    threads[1].start()  # waits in the queue (max_num_seqs=1)
    while engine.num_waiting < 1:
        time.sleep(0.01)
    r = httpx.post(f"{guarded.url}/v1/completions", json={**body, "stream": False}, headers=headers)
    assert r.status_code == 429 and error_of(r)["code"] == "queue_full"
    assert r.headers.get("retry-after") == "1"
    for t in threads:
        t.join(60)
    assert results == [200, 200]  # the queued request was served normally
    metrics = httpx.get(f"{guarded.url}/metrics").text
    assert 'llmrack_request_failure_total{model_name="tiny-qwen2",status="429"} 1.0' in metrics
    assert json.loads(httpx.get(f"{guarded.url}/ready").text)["status"] == "ready"
