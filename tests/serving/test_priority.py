"""Priority in llmrack's engine (vLLM's convention: lower is sooner): a waiting online request (priority 0) is
admitted before any waiting batch request, FIFO within one priority, batch requests leave half the queue and an
eighth of the rows to online ones; the HTTP field `priority` reaches the engine."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from serving.engine import Engine, EngineConfig, QueueFullError, SamplingParams
from serving.engine.core import EngineObserver
from serving.engine.sequence import Sequence
from tests.serving.conftest import ThreadServer

BATCH = 10


class AdmissionOrder(EngineObserver):
    def __init__(self) -> None:
        self.order: list[str] = []

    def on_admitted(self, seq: Sequence, queue_seconds: float) -> None:
        self.order.append(seq.request_id)


@pytest.fixture
def engine(load_model: Any) -> tuple[Engine, AdmissionOrder, list[int]]:
    loaded = load_model("qwen2")
    seen = AdmissionOrder()
    # One row: requests are admitted one at a time, so the admission order is the scheduling order.
    engine = Engine(loaded.model, loaded.tokenizer, loaded.eos_token_ids,
                    EngineConfig(max_num_seqs=1, max_model_len=256, max_queue=8), observer=seen)
    return engine, seen, loaded.tokenizer.encode("the rack is busy")


def test_online_requests_are_admitted_before_waiting_batch_requests(engine: Any) -> None:
    eng, seen, prompt = engine
    params = SamplingParams(max_tokens=3, temperature=0, ignore_eos=True)
    eng.submit(prompt, params, "batch-1", priority=BATCH)
    eng.submit(prompt, params, "batch-2", priority=BATCH)
    eng.submit(prompt, params, "online-1")
    eng.submit(prompt, params, "batch-3", priority=BATCH)
    eng.submit(prompt, params, "online-2", priority=0)
    eng.submit(prompt, params, "urgent", priority=-1)
    outputs = eng.run_until_idle()
    assert seen.order == ["urgent", "online-1", "online-2", "batch-1", "batch-2", "batch-3"]
    assert all(outs[-1].completion_tokens == 3 for outs in outputs.values())


def test_an_online_request_arriving_mid_job_jumps_the_batch_queue(engine: Any) -> None:
    eng, seen, prompt = engine
    params = SamplingParams(max_tokens=2, temperature=0, ignore_eos=True)
    for i in range(3):
        eng.submit(prompt, params, f"batch-{i}", priority=BATCH)
    eng.step()  # batch-0 is admitted and runs
    eng.submit(prompt, params, "online")
    eng.run_until_idle()
    assert seen.order == ["batch-0", "online", "batch-1", "batch-2"]


def test_batch_requests_take_at_most_half_the_queue(engine: Any) -> None:
    eng, _, prompt = engine
    params = SamplingParams(max_tokens=1)
    for i in range(4):
        eng.submit(prompt, params, f"batch-{i}", priority=BATCH)
    with pytest.raises(QueueFullError, match="half"):
        eng.submit(prompt, params, "batch-4", priority=BATCH)
    for i in range(4):  # the other half is still there for online requests
        eng.submit(prompt, params, f"online-{i}")
    with pytest.raises(QueueFullError, match="queue is full"):
        eng.submit(prompt, params, "online-4")


def test_the_http_priority_field_is_accepted_and_checked(server: ThreadServer) -> None:
    body = {"model": server.settings.name, "prompt": "hello", "max_tokens": 2, "priority": BATCH}
    assert httpx.post(f"{server.url}/v1/completions", json=body, timeout=30).status_code == 200
    bad = httpx.post(f"{server.url}/v1/completions", json={**body, "priority": "high"}, timeout=30)
    assert bad.status_code == 400 and "priority" in bad.json()["error"]["message"]


def test_batch_requests_leave_an_eighth_of_the_rows_to_online_ones(load_model: Any) -> None:
    loaded = load_model("qwen2")
    eng = Engine(loaded.model, loaded.tokenizer, loaded.eos_token_ids,
                 EngineConfig(max_num_seqs=8, max_model_len=256, max_queue=32))
    prompt = loaded.tokenizer.encode("a long job")
    for i in range(12):
        eng.submit(prompt, SamplingParams(max_tokens=50, temperature=0, ignore_eos=True), f"batch-{i}", priority=BATCH)
    eng.step()
    assert eng.num_running == 8 - 8 // 8 and eng.num_waiting == 12 - 7
    eng.submit(prompt, SamplingParams(max_tokens=5, temperature=0, ignore_eos=True), "online")
    eng.step()  # no batch request has finished, yet the online one runs at once
    assert eng.num_running == 8 and "online" in {s.request_id for s in eng._running}
