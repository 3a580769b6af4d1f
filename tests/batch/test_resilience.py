"""Crash-safe and polite: a service killed mid-job (SIGKILL) resumes from its store with every line answered
exactly once, and a rack that answers 429 is backed off from, not counted as failures."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmrack.contracts import metrics as names
from tests.batch.conftest import BatchService, completed_at_least, counts, jsonl_of, submit, wait_for
from tests.serving.conftest import ThreadServer

LINES = 80
MAX_INFLIGHT = 4


def _answered(url: str) -> float:
    """Requests the upstream answered in full (stop or length), from its own /metrics."""
    page = httpx.get(f"{url}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(page) for s in f.samples
               if s.name == names.counter_series(names.REQUEST_SUCCESS)
               and s.labels.get(names.FINISHED_REASON_LABEL) in ("stop", "length"))


def test_killed_mid_job_resumes_and_answers_every_line_once(upstream: ThreadServer, batch_state: str,
                                                            tmp_path: Path) -> None:
    """On both stores: SQLite in a directory and PostgreSQL (`--state postgresql://...`)."""
    model = str(upstream.settings.name)
    svc = BatchService(upstream.url, batch_state, "--max-inflight", str(MAX_INFLIGHT))
    before = _answered(upstream.url)
    try:
        client = svc.start().client("unused")
        batch = submit(client, tmp_path / "in.jsonl", LINES, model, max_tokens=24)
        done = completed_at_least(client, batch.id, 10)
        svc.kill()
        assert done < LINES, "the job ended before the crash: make it longer"

        client = svc.start().client("unused")
        finished = wait_for(client, batch.id)
        output = jsonl_of(client, finished.output_file_id)
    finally:
        svc.stop()
    assert sorted(o["custom_id"] for o in output) == sorted(f"req-{i}" for i in range(LINES))
    assert counts(finished) == (LINES, LINES, 0) and finished.error_file_id is None
    # Lines answered before the crash were not sent again: at most the ones in flight at the kill were.
    assert _answered(upstream.url) - before <= LINES + MAX_INFLIGHT


@pytest.fixture(scope="module")
def tight_upstream(tiny_model: Path) -> Iterator[ThreadServer]:
    # One sequence and a one-deep queue: a batch that sends 8 at a time meets 429 at once.
    with ThreadServer(tiny_model, max_num_seqs=1, max_model_len=512, max_queue=1) as srv:
        yield srv


def test_a_busy_rack_is_backed_off_from_and_no_line_fails(tight_upstream: ThreadServer, tmp_path: Path) -> None:
    svc = BatchService(tight_upstream.url, tmp_path / "state", "--max-inflight", "8")
    try:
        client = svc.start().client("unused")
        finished = wait_for(client, submit(client, tmp_path / "in.jsonl", 20, str(tight_upstream.settings.name)).id)
        page = httpx.get(f"{svc.url}/metrics").text
    finally:
        svc.stop()
    assert counts(finished) == (20, 20, 0)
    retries = {s.labels["reason"]: s.value for f in text_string_to_metric_families(page) for s in f.samples
               if s.name == names.counter_series(names.BATCH_UPSTREAM_RETRIES)}
    assert retries.get("http_429", 0) > 0


def test_a_job_past_its_completion_window_ends_expired_keeping_what_finished(upstream: ThreadServer,
                                                                            tmp_path: Path) -> None:
    svc = BatchService(upstream.url, tmp_path / "state", "--max-inflight", "2")
    try:
        client = svc.start().client("unused")
        batch = submit(client, tmp_path / "in.jsonl", 40, str(upstream.settings.name), max_tokens=24)
        completed_at_least(client, batch.id, 3)
        svc.kill()
        # The service was down past the job's window: what the store says when it comes back.
        with sqlite3.connect(tmp_path / "state" / "batch.sqlite3") as db:
            db.execute("UPDATE batches SET expires_at = ? WHERE id = ?", (int(time.time()) - 1, batch.id))
        client = svc.start().client("unused")
        ended = wait_for(client, batch.id, ("expired",), timeout=30)
        output, errors = jsonl_of(client, ended.output_file_id), jsonl_of(client, ended.error_file_id)
    finally:
        svc.stop()
    total, completed, failed = counts(ended)
    assert total == 40 and completed >= 3 and completed + failed == 40 and ended.expired_at is not None
    assert len(output) == completed and len(errors) == failed
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert sorted(o["custom_id"] for o in output + errors) == sorted(f"req-{i}" for i in range(40))
