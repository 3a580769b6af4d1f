"""The whole flow through the official openai client against `llmrack batch serve` with a real llmrack server
upstream: upload, create, poll, download, list, cancel, a line that fails at run time, tenants, /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmrack.contracts import metrics as names
from tests.batch.conftest import KEYS, BatchService, counts, jsonl_of, requests_file, wait_for
from tests.serving.conftest import ThreadServer


@pytest.fixture(scope="module")
def service(upstream: ThreadServer, key_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchService]:
    svc = BatchService(upstream.url, tmp_path_factory.mktemp("state"), "--api-key-file", str(key_file),
                       "--prometheus", f"{upstream.url}/metrics", "--max-file-bytes", "100000")
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def model(upstream: ThreadServer) -> str:
    return str(upstream.settings.name)


@pytest.fixture(scope="module")
def alice(service: BatchService) -> openai.OpenAI:
    return service.client(KEYS["alice"])


def test_a_job_runs_to_completion_with_one_answer_per_line(alice: openai.OpenAI, model: str,
                                                           tmp_path: Path) -> None:
    too_long = {"custom_id": "too-long", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}}
    path = requests_file(tmp_path / "in.jsonl", 12, model, extra=[too_long])
    uploaded = alice.files.create(file=path.open("rb"), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == path.stat().st_size
    assert alice.files.retrieve(uploaded.id).filename == "in.jsonl"

    batch = alice.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h", metadata={"job": "smoke"})
    assert batch.status == "in_progress" and counts(batch)[0] == 13
    done = wait_for(alice, batch.id)

    assert counts(done) == (13, 12, 1)
    assert done.metadata == {"job": "smoke"} and done.completed_at is not None
    output = jsonl_of(alice, done.output_file_id)
    assert sorted(o["custom_id"] for o in output) == sorted(f"req-{i}" for i in range(12))
    for line in output:
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert line["response"]["body"]["object"] == "chat.completion"
        assert line["response"]["body"]["usage"]["completion_tokens"] >= 1
    assert done.usage.output_tokens == sum(o["response"]["body"]["usage"]["completion_tokens"] for o in output)
    # The line the upstream refused (400: over the context) is in the error file, with the upstream's reason.
    errors = jsonl_of(alice, done.error_file_id)
    assert [e["custom_id"] for e in errors] == ["too-long"]
    assert errors[0]["response"]["status_code"] == 400
    assert "context length" in errors[0]["response"]["body"]["error"]["message"]

    assert batch.id in [b.id for b in alice.batches.list()]


def test_cancel_stops_sending_at_once_and_keeps_what_finished(alice: openai.OpenAI, model: str,
                                                             upstream: ThreadServer, tmp_path: Path) -> None:
    path = requests_file(tmp_path / "big.jsonl", 300, model, max_tokens=48)
    batch = alice.batches.create(input_file_id=alice.files.create(file=path.open("rb"), purpose="batch").id,
                                 endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 60
    while counts(alice.batches.retrieve(batch.id))[1] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelled = alice.batches.cancel(batch.id)
    assert cancelled.status in ("cancelling", "cancelled")
    cancelled = wait_for(alice, batch.id, ("cancelled",), timeout=10)
    assert 3 <= counts(cancelled)[1] < 300
    output = jsonl_of(alice, cancelled.output_file_id)
    assert len(output) == counts(cancelled)[1]
    assert len({o["custom_id"] for o in output}) == len(output)
    # Nothing more reaches the upstream: its queue empties (the aborted requests leave within a step or two).
    deadline = time.monotonic() + 5
    while upstream.state.engine is not None and upstream.state.engine.has_work():
        assert time.monotonic() < deadline, "the upstream still has batch requests after the cancel"
        time.sleep(0.1)
    time.sleep(1.0)
    assert upstream.state.engine is not None and not upstream.state.engine.has_work()
    assert counts(alice.batches.retrieve(batch.id)) == counts(cancelled)


def test_a_tenant_sees_only_its_own_jobs_and_files(service: BatchService, alice: openai.OpenAI, model: str,
                                                   tmp_path: Path) -> None:
    bob = service.client(KEYS["bob"])
    uploaded = alice.files.create(file=requests_file(tmp_path / "a.jsonl", 1, model).open("rb"), purpose="batch")
    batch = alice.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        bob.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.content(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        bob.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.id not in [b.id for b in bob.batches.list()]
    with pytest.raises(openai.AuthenticationError):
        service.client("sk-wrong").batches.list()
    wait_for(alice, batch.id)


def test_metrics_per_job_and_tenant(service: BatchService, alice: openai.OpenAI, model: str, tmp_path: Path) -> None:
    uploaded = alice.files.create(file=requests_file(tmp_path / "m.jsonl", 4, model).open("rb"), purpose="batch")
    batch = wait_for(alice, alice.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                 completion_window="24h").id)
    page = httpx.get(f"{service.url}/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(page) for s in f.samples}
    labels = {names.TENANT_LABEL: "alice", names.BATCH_ID_LABEL: batch.id}
    lines = samples[(names.BATCH_LINES, tuple(sorted({**labels, "state": "completed"}.items())))]
    tokens = samples[(f"{names.BATCH_TOKENS}_total", tuple(sorted({**labels, "kind": "completion"}.items())))]
    assert lines == 4 and tokens == batch.usage.output_tokens
    assert (names.BATCH_CONCURRENCY_LIMIT, ()) in samples
