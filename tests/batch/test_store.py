"""The batch store on both of its databases, with the same tests: SQLite in a directory and PostgreSQL (a throwaway
cluster of Debian's PostgreSQL 15, tests/batch/conftest.py). Files per tenant, a job and its lines in one
transaction, a line answered once only (a second answer is refused, as after a crash), the job's output and error
files written from the rows when it ends, listing with pagination, expiry, the per-job series, and a store opened
again (a restarted service) finding everything where it was."""

from __future__ import annotations

import json
import time

import pytest

from llmrack.batch.jsonl import Line
from llmrack.batch.store import Store, StoreError


def _lines(n: int) -> list[Line]:
    return [Line(number=i + 1, custom_id=f"req-{i}", url="/v1/chat/completions",
                 body={"model": "tiny", "messages": [{"role": "user", "content": f"line {i}"}]}) for i in range(n)]


def test_files_jobs_and_lines_round_trip(batch_state: str) -> None:
    store = Store(batch_state)
    try:
        content = b'{"custom_id": "a"}\n' + bytes(range(256))  # any bytes, kept exactly
        f = store.add_file("alice", "in.jsonl", "batch", content)
        assert store.file_content("alice", f.id) == content
        assert store.get_file("bob", f.id) is None and store.file_content("bob", f.id) is None
        assert [x.id for x in store.list_files("alice", None)] == [f.id]
        assert store.list_files("alice", "batch_output") == []

        batch_id = store.add_batch("alice", "/v1/chat/completions", f.id, "24h", {"k": "v"}, _lines(5))
        assert store.get_batch("bob", batch_id) is None
        got = store.get_batch("alice", batch_id)
        assert got is not None and got.status == "in_progress" and got.metadata == {"k": "v"}
        assert got.request_counts is not None and got.request_counts.total == 5
        assert [p.custom_id for p in store.pending_lines(batch_id)] == [f"req-{i}" for i in range(5)]

        assert store.record(batch_id, 0, True, {"custom_id": "req-0", "n": 1}, prompt_tokens=3, completion_tokens=7)
        # The same line answered again (a request in flight when the service was killed): refused, nothing written.
        assert not store.record(batch_id, 0, True, {"custom_id": "req-0", "n": 2}, completion_tokens=9)
        assert store.record(batch_id, 1, False, {"custom_id": "req-1", "error": "bad"})
        assert [p.idx for p in store.pending_lines(batch_id)] == [2, 3, 4]
        stats = {s.batch_id: s for s in store.job_stats()}[batch_id]
        assert (stats.tenant, stats.pending, stats.completed, stats.failed) == ("alice", 3, 1, 1)
        assert (stats.prompt_tokens, stats.completion_tokens) == (3, 7)
    finally:
        store.close()

    # --- a restarted service: everything is where it was, and the job ends from its rows --------------------------
    store = Store(batch_state)
    try:
        assert store.active_batches() == [(batch_id, "in_progress")]
        for idx in (2, 3, 4):
            assert store.record(batch_id, idx, True, {"custom_id": f"req-{idx}"}, completion_tokens=1)
        store.finish(batch_id, "completed")
        store.finish(batch_id, "failed")  # an ended job stays as it ended
        done = store.get_batch("alice", batch_id)
        assert done is not None and done.status == "completed" and done.completed_at is not None
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (4, 1)
        assert done.usage is not None and (done.usage.input_tokens, done.usage.output_tokens) == (3, 10)
        assert done.output_file_id and done.error_file_id
        out = [json.loads(x) for x in (store.file_content("alice", done.output_file_id) or b"").splitlines()]
        assert [o["custom_id"] for o in out] == ["req-0", "req-2", "req-3", "req-4"] and out[0]["n"] == 1
        errors = (store.file_content("alice", done.error_file_id) or b"").splitlines()
        assert [json.loads(e)["custom_id"] for e in errors] == ["req-1"]
        assert store.active_batches() == []
        assert not store.set_status(batch_id, "cancelling")
        assert store.delete_file("alice", f.id) and not store.delete_file("alice", f.id)
    finally:
        store.close()


def test_listing_pages_and_expiry(batch_state: str) -> None:
    store = Store(batch_state)
    try:
        f = store.add_file("alice", "in.jsonl", "batch", b"x")
        ids = [store.add_batch("alice", "/v1/chat/completions", f.id, "24h", None, _lines(2)) for _ in range(3)]
        first, more = store.list_batches("alice", None, 2)
        assert more and len(first) == 2
        rest, more = store.list_batches("alice", first[-1].id, 2)
        assert not more and {b.id for b in first + rest} == set(ids)
        assert store.list_batches("bob", None, 10) == ([], False)

        store.record(ids[0], 0, True, {"custom_id": "req-0"})
        store.expire(ids[0])
        gone = store.get_batch(None, ids[0])
        assert gone is not None and gone.status == "expired" and gone.expired_at is not None
        lines = (store.file_content("alice", gone.error_file_id or "") or b"").splitlines()
        assert [json.loads(x)["error"]["code"] for x in lines] == ["batch_expired"]
        assert store.tenant_of(ids[1]) == "alice" and store.expires_at(ids[1]) is not None
    finally:
        store.close()


def test_a_database_that_does_not_answer_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot connect to the batch database"):
        Store("postgresql://nobody@127.0.0.1:1/none")


def test_one_runner_lease_per_store(batch_state: str) -> None:
    """Two services on one store: one holds the runner lease, the other is refused until it expires (by the
    database's clock) or is released; an answer is stored only from the lease's current holder."""
    a, b = Store(batch_state), Store(batch_state)
    try:
        assert a.hold_lease("host-a:8100", 1.5)
        assert not b.hold_lease("host-b:8100", 1.5)
        assert a.hold_lease("host-a:8100", 1.5)  # renewed
        assert b.lease_holder() == "host-a:8100"
        batch_id = a.add_batch("alice", "/v1/chat/completions", "file-x", "24h", None, _lines(3))
        assert not b.record(batch_id, 0, True, {"custom_id": "req-0"}, holder="host-b:8100")
        assert a.record(batch_id, 0, True, {"custom_id": "req-0"}, holder="host-a:8100")

        deadline = time.monotonic() + 10
        while not b.hold_lease("host-b:8100", 30):  # a's lease runs out: b takes over
            assert time.monotonic() < deadline, "the expired lease was never taken over"
            time.sleep(0.1)
        assert b.lease_holder() == "host-b:8100"
        # The old holder can neither renew nor store an answer any more.
        assert not a.hold_lease("host-a:8100", 1.5)
        assert not a.record(batch_id, 1, True, {"custom_id": "req-1"}, holder="host-a:8100")
        assert b.record(batch_id, 1, True, {"custom_id": "req-1"}, holder="host-b:8100")
        assert [p.idx for p in b.pending_lines(batch_id)] == [2]

        b.release_lease("host-b:8100")  # a clean stop: the standby needs no wait
        assert a.lease_holder() is None and a.hold_lease("host-a:8100", 1.5)
    finally:
        a.close()
        b.close()
