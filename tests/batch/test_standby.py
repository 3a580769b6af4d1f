"""Two `llmrack batch serve` on one PostgreSQL store: both answer the API, only the holder of the store's runner
lease sends lines. The active one is SIGKILLed mid-job and the standby takes the job over when the lease runs out:
every line is answered exactly once in the output and the rack answered at most the lines plus those in flight at
the kill (nothing was sent by both). A job cancelled on the standby is stopped by the active one, and a service
stopped cleanly hands the lease over at once."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.batch.conftest import (
    BatchService,
    completed_at_least,
    counts,
    jsonl_of,
    new_database,
    submit,
    wait_for,
)
from tests.batch.test_resilience import _answered
from tests.serving.conftest import ThreadServer

LINES = 80
MAX_INFLIGHT = 4
LEASE_S = 3


def _runner(svc: BatchService) -> str:
    return str(httpx.get(f"{svc.url}/health", timeout=5).json()["runner"])


def _until_active(svc: BatchService, within: float) -> float:
    start = time.monotonic()
    while _runner(svc) != "active":
        assert time.monotonic() - start < within, f"{svc.url} still standing by after {within} s"
        time.sleep(0.1)
    return time.monotonic() - start


def test_a_standby_takes_over_and_no_line_is_sent_twice(upstream: ThreadServer, postgres_cluster: str,
                                                        tmp_path: Path) -> None:
    db = new_database(postgres_cluster)
    model = str(upstream.settings.name)
    extra = ("--max-inflight", str(MAX_INFLIGHT), "--lease", str(LEASE_S))
    a, b = BatchService(upstream.url, db, *extra), BatchService(upstream.url, db, *extra)
    before = _answered(upstream.url)
    try:
        a.start()
        b.start()
        assert (_runner(a), _runner(b)) == ("active", "standby")
        # Created on the standby: the active service picks the job up from the store.
        on_b = b.client("unused")
        deadline = time.monotonic() + 60
        batch = submit(on_b, tmp_path / "in.jsonl", LINES, model, max_tokens=24)
        done = completed_at_least(on_b, batch.id, 10, message="the active service never worked the standby's job")
        a.kill()
        assert done < LINES, "the job ended before the crash: make it longer"
        took = _until_active(b, LEASE_S + 5)
        finished = wait_for(on_b, batch.id)
        output = jsonl_of(on_b, finished.output_file_id)
        answered = _answered(upstream.url) - before
        print(f"active service SIGKILLed at line {done}; standby took over after {took:.1f} s; upstream answered "
              f"{answered:.0f} for {LINES} lines")
        assert sorted(o["custom_id"] for o in output) == sorted(f"req-{i}" for i in range(LINES))
        assert counts(finished) == (LINES, LINES, 0) and finished.error_file_id is None
        # Only one service sent lines: at most the lines in flight at the kill were sent again.
        assert answered <= LINES + MAX_INFLIGHT

        # --- the killed service comes back as the standby; a job cancelled there is stopped by b -----------------
        a.start()
        assert _runner(a) == "standby"
        on_a = a.client("unused")
        long = submit(on_a, tmp_path / "long.jsonl", 400, model, max_tokens=24)
        while counts(on_a.batches.retrieve(long.id))[1] < 3:
            assert time.monotonic() < deadline + 120
            time.sleep(0.05)
        assert on_a.batches.cancel(long.id).status in ("cancelling", "cancelled")
        cancelled = wait_for(on_a, long.id, ("cancelled",), timeout=10)
        assert counts(cancelled)[1] < 400

        # --- a clean stop releases the lease: the standby needs no expiry -----------------------------------------
        b.stop()
        assert _until_active(a, 2 * 1.0 + 1) < LEASE_S
    finally:
        a.stop()
        b.stop()
