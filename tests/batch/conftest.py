"""Fixtures for the batch tests: a real llmrack server on a tiny model upstream, the batch service as the real
`llmrack batch serve` command in a subprocess (so a test can kill it), and the official openai client."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest
import torch._dynamo  # before ansible replaces sys.intern: see tests/serving/conftest.py

from llmrack.keys import KeyStore, save
from serving.model.tiny import make_tiny
from tests.serving.conftest import ThreadServer, free_port

# tenant -> its key, filled by the key_file fixture (keys are random, shown once, as in real use)
KEYS: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    # Two shared cores: torch's spinning worker threads would slow the tiny model down several times.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny("qwen2", tmp_path_factory.mktemp("models") / "tiny-qwen2", seed=0)


@pytest.fixture(scope="module")
def upstream(tiny_model: Path) -> Iterator[ThreadServer]:
    with ThreadServer(tiny_model, max_num_seqs=8, max_model_len=512, max_queue=64) as srv:
        yield srv


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key store (what `llmrack keys create` writes) with one key of tenant alice and one of tenant bob."""
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    store = KeyStore(tenants={}, keys=[])
    for tenant in ("alice", "bob"):
        KEYS[tenant] = store.create(f"{tenant}-batch", tenant)[1]
    save(store, path)
    return path


class BatchService:
    """`llmrack batch serve` as a child process on a free port; `kill()` is a crash (SIGKILL), not a stop."""

    def __init__(self, upstream: str, state: Path | str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "llmrack", "batch", "serve", "--upstream", upstream, "--port",
                     str(self.port), "--state", str(state), "--log-level", "warning", *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BatchService:
        self.proc = subprocess.Popen(self.argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the batch service exited with {self.proc.returncode}"
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("the batch service did not answer /health within 30 s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=30)


def requests_file(path: Path, n: int, model: str, *, max_tokens: int = 8, extra: list[dict[str, Any]] | None = None,
                  url: str = "/v1/chat/completions") -> Path:
    """A batch input file of `n` chat requests (custom_id req-0 .. req-n-1), plus any `extra` lines."""
    lines = [{"custom_id": f"req-{i}", "method": "POST", "url": url,
              "body": {"model": model, "messages": [{"role": "user", "content": f"say something about {i}"}],
                       "max_tokens": max_tokens, "temperature": 0}} for i in range(n)]
    path.write_text("".join(json.dumps(line) + "\n" for line in [*lines, *(extra or [])]))
    return path


def submit(client: openai.OpenAI, path: Path, lines: int, model: str, *, max_tokens: int = 8) -> Any:
    """Upload a batch input file of `lines` chat requests (requests_file) and create a job of it."""
    uploaded = client.files.create(file=requests_file(path, lines, model, max_tokens=max_tokens).open("rb"),
                                   purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")


def completed_at_least(client: openai.OpenAI, batch_id: str, lines: int, *, timeout: float = 60.0,
                       message: str = "", interval: float = 0.05) -> int:
    """Poll until the job has completed at least `lines` lines; returns how many it had completed then."""
    deadline = time.monotonic() + timeout
    while (done := counts(client.batches.retrieve(batch_id))[1]) < lines:
        assert time.monotonic() < deadline, message or f"{batch_id}: {done} of {lines} lines completed in {timeout:g} s"
        time.sleep(interval)
    return done


def wait_for(client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...] = ("completed",),
             timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        time.sleep(0.2)
    raise TimeoutError(f"{batch_id} still {batch.status} after {timeout} s ({batch.request_counts})")


def jsonl_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def counts(batch: Any) -> tuple[int, int, int]:
    """(total, completed, failed) of a batch object; the API types request_counts as optional."""
    rc = batch.request_counts
    assert rc is not None, f"{batch.id} has no request_counts"
    return rc.total, rc.completed, rc.failed


# ---- the store's two backends ------------------------------------------------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _pg_tool(name: str) -> str | None:
    found = shutil.which(name)
    return found or (str(PG_BIN / name) if (PG_BIN / name).exists() else None)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (Debian's initdb/pg_ctl) on a free loopback port; yields its base URL.
    Skips only where the binaries are absent (the CI machine has them)."""
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (apt-get install postgresql)")
    # initdb refuses to run as root: as root the cluster belongs to the postgres user, in a directory it can reach
    # (pytest's own tmp directories are root's alone).
    user = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="llmrack-batch-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if user:
        shutil.chown(base, user)
        shutil.chown(sock, user)
    port = free_port()
    run = functools.partial(subprocess.run, capture_output=True, text=True, user=user, timeout=120, check=False)
    made = run([initdb, "-D", str(data), "-U", "llmrack", "--auth=trust", "-E", "UTF8", "--no-sync"])
    assert made.returncode == 0, made.stderr
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = run([pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "-t", "60", "start"])
    assert started.returncode == 0, started.stderr + (base / "log").read_text()
    try:
        yield f"postgresql://llmrack@127.0.0.1:{port}"
    finally:
        run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(base, ignore_errors=True)


def new_database(cluster: str) -> str:
    """A fresh database of the cluster; its URL."""
    name = f"batch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{cluster}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{cluster}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def batch_state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What `llmrack batch serve --state` is given: a directory (SQLite) or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "state")
    return new_database(request.getfixturevalue("postgres_cluster"))
