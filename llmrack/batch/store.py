"""The batch service's state: files, jobs and every line's progress; nothing lives only in memory.

Two stores run the same SQL: SQLite in the state directory (the default, on the host's own disk) and PostgreSQL
(`--state postgresql://...`, a libpq URL: the store users outgrow SQLite into, and one several gateway hosts can
share with one of them active). The SQL here is the subset both speak; each backend only says how to connect,
begin a transaction and spell a few column types.

Several services on one store (PostgreSQL, or SQLite on one host's disk) all serve the API, but only the holder
of the store's runner lease sends lines: a row with an expiry on the database's clock, renewed by its holder and
taken over by a standby once it has expired (`hold_lease`). A line's answer is stored only while its runner still
holds the lease, so a runner that lost it can no longer write into a job a standby has taken over.

A line moves from `pending` to `completed` or `failed` exactly once (the update is conditional on `pending`), and
a job's output and error files are written from those rows in the same transaction that ends the job, so a
process killed at any point resumes from the rows and no custom_id is ever answered twice in the output.
WAL with synchronous=NORMAL survives a killed process; a power cut may lose the last few lines' results, which
are then sent again (still once in the output).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmrack.batch.jsonl import Line
from llmrack.batch.protocol import (
    TERMINAL,
    Batch,
    BatchErrors,
    BatchStatus,
    BatchUsage,
    FileObject,
    RequestCounts,
    error_line,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, filename TEXT NOT NULL, purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, content BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL, status TEXT NOT NULL, metadata TEXT, errors TEXT,
    output_file_id TEXT, error_file_id TEXT, created_at INTEGER NOT NULL, in_progress_at INTEGER,
    expires_at INTEGER, finalizing_at INTEGER, completed_at INTEGER, failed_at INTEGER, expired_at INTEGER,
    cancelling_at INTEGER, cancelled_at INTEGER
);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL, url TEXT NOT NULL, body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', result TEXT, prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0, finished_at REAL,
    PRIMARY KEY (batch_id, idx), UNIQUE (batch_id, custom_id)
);
CREATE INDEX IF NOT EXISTS lines_state ON lines (batch_id, state);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL
);
"""

# The one lease on a store: its holder is the only runner that sends lines (several services, one database).
RUNNER_LEASE = "runner"

ACTIVE: tuple[BatchStatus, ...] = ("validating", "in_progress", "finalizing", "cancelling")


@dataclass(frozen=True)
class PendingLine:
    idx: int
    custom_id: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True)
class JobStats:
    batch_id: str
    tenant: str
    status: str
    pending: int
    completed: int
    failed: int
    prompt_tokens: int
    completion_tokens: int


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...


class Backend(ABC):
    """One connection to the database, used under the store's lock."""

    # The database's clock in seconds since the epoch: leases expire by it, so hosts' clocks need not agree.
    now_sql: str

    @abstractmethod
    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor: ...

    @abstractmethod
    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...

    @abstractmethod
    def begin(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class SQLiteBackend(Backend):
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "batch.sqlite3"
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql, tuple(args))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._db.executemany(sql, rows)

    def begin(self) -> None:
        # IMMEDIATE: the write lock is taken at BEGIN, so a transaction never fails half-way on a busy database.
        self._db.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        self._db.close()


class PostgresBackend(Backend):
    """psycopg 3 (the batch extra); the password comes from libpq's usual places (PGPASSFILE, ~/.pgpass)."""

    now_sql = "CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)"

    def __init__(self, url: str) -> None:
        try:
            import psycopg  # noqa: PLC0415 (only a PostgreSQL store needs it)
            from psycopg.rows import dict_row  # noqa: PLC0415
        except ImportError:
            raise StoreError("a postgresql:// store needs psycopg: pip install 'llmrack[batch]'") from None
        self._psycopg = psycopg
        self._dict_row = dict_row
        self.url = url
        self._conn = self._connect()
        with self._conn.transaction():
            # Services starting at once on one database: CREATE ... IF NOT EXISTS is not safe concurrently.
            self._conn.execute("SELECT pg_advisory_xact_lock(8100)")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(_pg(statement, schema=True))

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self.url, autocommit=True, row_factory=self._dict_row, connect_timeout=10)
        except self._psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to the batch database: {str(exc).strip()}") from None

    def _live(self) -> Any:
        # A database restarted under a running service: connect again before the next statement (a statement
        # that was in flight failed, and its transaction with it; the job goes on from the rows).
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        cursor: Cursor = self._live().execute(_pg(sql), tuple(args))
        return cursor

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._live().cursor() as cur:
            cur.executemany(_pg(sql), rows)

    def begin(self) -> None:
        self._live().execute("BEGIN")

    def close(self) -> None:
        self._conn.close()


def _pg(sql: str, schema: bool = False) -> str:
    """The store's SQL as PostgreSQL takes it: %s placeholders; in the schema, its names of the column types."""
    if schema:
        return sql.replace("BLOB", "BYTEA").replace("INTEGER", "BIGINT").replace("REAL", "DOUBLE PRECISION")
    return sql.replace("?", "%s")


class StoreError(Exception):
    """The store cannot be opened (a database that does not answer, a driver that is not installed)."""


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(state: str | Path) -> bool:
    return str(state).startswith(POSTGRES_SCHEMES)


class Store:
    def __init__(self, state: Path | str) -> None:
        """`state`: a directory (SQLite in it) or a postgresql:// URL."""
        self._db: Backend = PostgresBackend(str(state)) if is_database_url(state) else SQLiteBackend(Path(state))
        # One connection shared by the event loop and the thread pool, serialised by a lock: SQLite allows one
        # writer at a time anyway, and every statement here is short.
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[Backend]:
        with self._lock:
            self._db.begin()
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, *args: Any) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---- files --------------------------------------------------------------------------------------------------
    def add_file(self, tenant: str, filename: str, purpose: str, content: bytes) -> FileObject:
        with self._tx() as db:
            return self._insert_file(db, tenant, filename, purpose, content)

    @staticmethod
    def _insert_file(db: Backend, tenant: str, filename: str, purpose: str, content: bytes) -> FileObject:
        f = FileObject(id=new_id("file-"), bytes=len(content), created_at=int(time.time()), filename=filename,
                       purpose=purpose)
        db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (f.id, tenant, f.filename, f.purpose, f.bytes, f.created_at, content))
        return f

    def get_file(self, tenant: str, file_id: str) -> FileObject | None:
        rows = self._query("SELECT id, bytes, created_at, filename, purpose FROM files WHERE id = ? AND tenant = ?",
                           file_id, tenant)
        return FileObject(**dict(rows[0])) if rows else None

    def list_files(self, tenant: str, purpose: str | None) -> list[FileObject]:
        rows = self._query("SELECT id, bytes, created_at, filename, purpose FROM files WHERE tenant = ? AND "
                           "(CAST(? AS TEXT) IS NULL OR purpose = ?) ORDER BY created_at DESC, id",
                           tenant, purpose, purpose)
        return [FileObject(**dict(r)) for r in rows]

    def file_content(self, tenant: str, file_id: str) -> bytes | None:
        rows = self._query("SELECT content FROM files WHERE id = ? AND tenant = ?", file_id, tenant)
        return bytes(rows[0]["content"]) if rows else None

    def delete_file(self, tenant: str, file_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM files WHERE id = ? AND tenant = ?", (file_id, tenant)).rowcount > 0

    # ---- batches ------------------------------------------------------------------------------------------------
    def add_batch(self, tenant: str, endpoint: str, input_file_id: str, window: str,
                  metadata: dict[str, str] | None, lines: list[Line]) -> str:
        """A checked job and its lines, in one transaction; it starts in_progress."""
        batch_id = new_id("batch_")
        now = int(time.time())
        with self._tx() as db:
            db.execute(
                "INSERT INTO batches (id, tenant, endpoint, input_file_id, completion_window, status, metadata, "
                "created_at, in_progress_at, expires_at) VALUES (?, ?, ?, ?, ?, 'in_progress', ?, ?, ?, ?)",
                (batch_id, tenant, endpoint, input_file_id, window, json.dumps(metadata) if metadata else None,
                 now, now, now + 24 * 3600))
            db.executemany("INSERT INTO lines (batch_id, idx, custom_id, url, body) VALUES (?, ?, ?, ?, ?)",
                           [(batch_id, i, ln.custom_id, ln.url, json.dumps(ln.body)) for i, ln in enumerate(lines)])
        return batch_id

    def get_batch(self, tenant: str | None, batch_id: str) -> Batch | None:
        rows = self._query("SELECT * FROM batches WHERE id = ? AND (CAST(? AS TEXT) IS NULL OR tenant = ?)",
                           batch_id, tenant, tenant)
        return self._batch(rows[0]) if rows else None

    def list_batches(self, tenant: str, after: str | None, limit: int) -> tuple[list[Batch], bool]:
        rows = self._query(
            "SELECT * FROM batches WHERE tenant = ? AND (CAST(? AS TEXT) IS NULL OR (created_at, id) < "
            "(SELECT created_at, id FROM batches WHERE id = ?)) ORDER BY created_at DESC, id DESC LIMIT ?",
            tenant, after, after, limit + 1)
        return [self._batch(r) for r in rows[:limit]], len(rows) > limit

    def _batch(self, row: Any) -> Batch:
        counts = self._query(
            "SELECT state, count(*) AS n, CAST(sum(prompt_tokens) AS BIGINT) AS p, "
            "CAST(sum(completion_tokens) AS BIGINT) AS c FROM lines "
            "WHERE batch_id = ? GROUP BY state", row["id"])
        by_state = {r["state"]: r for r in counts}
        total = sum(r["n"] for r in counts)
        prompt = sum(r["p"] or 0 for r in counts)
        completion = sum(r["c"] or 0 for r in counts)
        fields = {k: row[k] for k in row.keys() if k not in ("tenant", "metadata", "errors")}  # noqa: SIM118 (a Row iterates values)
        return Batch(
            **fields,
            metadata=json.loads(row["metadata"]) if row["metadata"] else None,
            errors=BatchErrors.model_validate_json(row["errors"]) if row["errors"] else None,
            request_counts=RequestCounts(
                total=total,
                completed=by_state["completed"]["n"] if "completed" in by_state else 0,
                failed=by_state["failed"]["n"] if "failed" in by_state else 0),
            usage=BatchUsage(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion),
        )

    def tenant_of(self, batch_id: str) -> str:
        rows = self._query("SELECT tenant FROM batches WHERE id = ?", batch_id)
        return str(rows[0]["tenant"]) if rows else ""

    def active_batches(self) -> list[tuple[str, str]]:
        """(id, status) of every job not yet ended, oldest first: what a (re)started service must work on."""
        marks = ",".join("?" * len(ACTIVE))
        rows = self._query(f"SELECT id, status FROM batches WHERE status IN ({marks}) ORDER BY created_at, id",
                           *ACTIVE)
        return [(r["id"], r["status"]) for r in rows]

    def set_status(self, batch_id: str, status: BatchStatus, only_from: BatchStatus | None = None) -> bool:
        """Move a job to `status` (stamping `<status>_at`) unless it already ended, or, with `only_from`, unless it
        is in another status (a cancel asked on another service wins over finalizing); False when not moved."""
        marks = ",".join("?" * len(TERMINAL))
        with self._tx() as db:
            cur = db.execute(f"UPDATE batches SET status = ?, {status}_at = ? WHERE id = ? AND status NOT IN "
                             f"({marks}) AND (CAST(? AS TEXT) IS NULL OR status = ?)",
                             (status, int(time.time()), batch_id, *TERMINAL, only_from, only_from))
            return cur.rowcount > 0

    # ---- lines --------------------------------------------------------------------------------------------------
    def pending_lines(self, batch_id: str) -> list[PendingLine]:
        rows = self._query("SELECT idx, custom_id, url, body FROM lines WHERE batch_id = ? AND state = 'pending' "
                           "ORDER BY idx", batch_id)
        return [PendingLine(r["idx"], r["custom_id"], r["url"], json.loads(r["body"])) for r in rows]

    def record(self, batch_id: str, idx: int, ok: bool, result: dict[str, Any], prompt_tokens: int = 0,
               completion_tokens: int = 0, holder: str | None = None) -> bool:
        """Store a line's answer once; False (and nothing written) when the line already had one, or when `holder`
        (a runner's lease holder name) no longer holds the runner lease."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE lines SET state = ?, result = ?, prompt_tokens = ?, completion_tokens = ?, finished_at = ? "
                "WHERE batch_id = ? AND idx = ? AND state = 'pending' AND (CAST(? AS TEXT) IS NULL OR EXISTS "
                f"(SELECT 1 FROM leases WHERE name = ? AND holder = ? AND expires_at > {db.now_sql}))",
                ("completed" if ok else "failed", json.dumps(result), prompt_tokens, completion_tokens, time.time(),
                 batch_id, idx, holder, RUNNER_LEASE, holder))
            return cur.rowcount > 0

    # ---- the runner lease ---------------------------------------------------------------------------------------
    def hold_lease(self, holder: str, ttl_s: float) -> bool:
        """Take or renew the runner lease for `ttl_s` seconds of the database's clock; False while another holder's
        lease has not expired."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, "
                f"{db.now_sql} + ?) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                f"expires_at = excluded.expires_at WHERE leases.holder = excluded.holder OR "
                f"leases.expires_at <= {db.now_sql}",
                (RUNNER_LEASE, holder, float(ttl_s)))
            return cur.rowcount > 0

    def release_lease(self, holder: str) -> None:
        """Give the lease up (a service stopping): a standby takes over at its next look instead of at expiry."""
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (RUNNER_LEASE, holder))

    def lease_holder(self) -> str | None:
        """Who holds the runner lease now (None: nobody, or it has expired)."""
        with self._lock:
            row = self._db.execute(f"SELECT holder FROM leases WHERE name = ? AND expires_at > {self._db.now_sql}",
                                   (RUNNER_LEASE,)).fetchone()
        return str(row["holder"]) if row else None

    def expires_at(self, batch_id: str) -> int | None:
        rows = self._query("SELECT expires_at FROM batches WHERE id = ?", batch_id)
        return int(rows[0]["expires_at"]) if rows and rows[0]["expires_at"] is not None else None

    def expire(self, batch_id: str) -> None:
        """Past its completion window: every line still pending goes to the error file (code batch_expired, as the
        API does), then the job ends `expired` with what finished in its output file."""
        rows = self._query("SELECT idx, custom_id FROM lines WHERE batch_id = ? AND state = 'pending'", batch_id)
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE lines SET state = 'failed', result = ?, finished_at = ? WHERE batch_id = ? AND idx = ? "
                "AND state = 'pending'",
                [(json.dumps(error_line(new_id("batch_req_"), r["custom_id"], "batch_expired",
                                        "this request could not be executed before the completion window expired")),
                  now, batch_id, r["idx"]) for r in rows])
        self.finish(batch_id, "expired")

    def finish(self, batch_id: str, status: BatchStatus) -> None:
        """End a job: write its output and error files from the lines and set `status`, in one transaction."""
        now = int(time.time())
        with self._tx() as db:
            # Takes the job's row lock first (PostgreSQL), so two services ending one job write its files once.
            db.execute("UPDATE batches SET status = status WHERE id = ?", (batch_id,))
            row = db.execute("SELECT tenant, status FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None or row["status"] in TERMINAL:
                return
            file_ids: dict[str, str | None] = {}
            for state, column in (("completed", "output_file_id"), ("failed", "error_file_id")):
                results = db.execute("SELECT result FROM lines WHERE batch_id = ? AND state = ? ORDER BY idx",
                                     (batch_id, state)).fetchall()
                content = "".join(f"{r['result']}\n" for r in results).encode()
                file_ids[column] = (self._insert_file(db, row["tenant"], f"{batch_id}_{column[:-8]}.jsonl",
                                                      "batch_output", content).id if content else None)
            db.execute(f"UPDATE batches SET status = ?, {status}_at = ?, output_file_id = ?, error_file_id = ? "
                       "WHERE id = ?", (status, now, file_ids["output_file_id"], file_ids["error_file_id"], batch_id))

    def job_stats(self, recent_s: float = 3600.0) -> list[JobStats]:
        """Per job still running or ended within `recent_s`: lines per state and tokens (the /metrics series)."""
        since = int(time.time() - recent_s)
        marks = ",".join("?" * len(TERMINAL))
        rows = self._query(
            "SELECT b.id, b.tenant, b.status, "
            "sum(CASE WHEN l.state = 'pending' THEN 1 ELSE 0 END) AS pending, "
            "sum(CASE WHEN l.state = 'completed' THEN 1 ELSE 0 END) AS completed, "
            "sum(CASE WHEN l.state = 'failed' THEN 1 ELSE 0 END) AS failed, "
            "CAST(sum(l.prompt_tokens) AS BIGINT) AS p, CAST(sum(l.completion_tokens) AS BIGINT) AS c "
            "FROM batches b JOIN lines l ON l.batch_id = b.id "
            f"WHERE b.status NOT IN ({marks}) OR coalesce(b.completed_at, b.cancelled_at, b.failed_at, "
            "b.expired_at, 0) >= ? GROUP BY b.id", *TERMINAL, since)
        return [JobStats(r["id"], r["tenant"], r["status"], r["pending"] or 0, r["completed"] or 0,
                         r["failed"] or 0, r["p"] or 0, r["c"] or 0) for r in rows]
