"""Property-based fuzzing of a real `llmrack serve` (a separate process, the tiny model) from the OpenAPI document
it serves, with schemathesis: valid and invalid requests for every operation, with and without the API key.

Every response must be documented (status code and content type), match its schema, and never be a 5xx; after
the run the server is still ready, its log holds no traceback, and its memory has stayed bounded. The run is
bounded in count (FUZZ_EXAMPLES per operation and generation mode, derandomized so CI sees the same cases) and
in time (each request has a timeout; the whole run a budget). The figures are printed for docs/reliability.md.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serving.conftest import free_port, wait_ready

pytestmark = pytest.mark.slow

KEY = "sk-fuzz-0123456789abcdef"
# Examples per operation and generation mode; generation requests dominate the time (<= 32 new tokens each).
FUZZ_EXAMPLES = int(os.environ.get("LLMRACK_FUZZ_EXAMPLES", "150"))
BUDGET_S = 420.0
RSS_GROWTH_LIMIT_MB = 256
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class Served:
    url: str
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    statuses: Counter[int] = field(default_factory=Counter)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def served(qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "keys").write_text(KEY + "\n")
    port = free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmrack", "serve", "--model", str(qwen2_dir), "--host", "127.0.0.1",
             "--port", str(port), "--api-key-file", str(tmp / "keys"), "--max-model-len", "48", "--max-num-seqs", "4",
             "--max-queue", "8", "--threads", "1", "--log-level", "info"],
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=180)
        name = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"][0]["id"]
        yield Served(url, name, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _schema(served: Served) -> Any:
    doc = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
    # Positive cases name the served model, so they reach the engine instead of stopping at 404; negative cases
    # still send anything there. The rest of the document is used exactly as served.
    doc = copy.deepcopy(doc)
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        doc["components"]["schemas"][name]["properties"]["model"] = {"type": "string", "enum": [served.name]}
    return schemathesis.openapi.from_dict(doc)


def test_fuzzed_api_never_fails_and_documents_every_answer(served: Served) -> None:
    schema = _schema(served)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/completions", "POST /v1/chat/completions",
                                               "GET /v1/models", "GET /ready", "GET /health", "GET /metrics"}
    # Warm-up requests so the baseline RSS includes what steady serving allocates.
    auth = {"Authorization": f"Bearer {KEY}"}
    for _ in range(3):
        httpx.post(f"{served.url}/v1/completions", headers=auth, timeout=60,
                   json={"model": served.name, "prompt": "hello", "max_tokens": 16})
    rss_before = served.rss_mb()
    started = time.monotonic()
    content_types: Counter[str] = Counter()
    for op in operations:
        # An operation without parameters or body (GET /ready) has no invalid input to generate.
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if len(op.body) else [GenerationMode.POSITIVE]
        for mode in modes:
            strategy = op.as_strategy(generation_mode=mode)

            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=strategy, with_key=st.sampled_from([True, True, True, False]))
            def fuzz(case: Any, with_key: bool) -> None:
                assert time.monotonic() - started < BUDGET_S, f"fuzzing passed its budget of {BUDGET_S}s"
                headers = {"Authorization": f"Bearer {KEY}"} if with_key else {}
                response = case.call(base_url=served.url, headers=headers, timeout=60)
                served.statuses[response.status_code] += 1
                content_types[response.headers.get("content-type", [""])[0].split(";")[0]] += 1
                case.validate_response(response, checks=CHECKS)

            fuzz()
    elapsed = time.monotonic() - started
    total = sum(served.statuses.values())
    server_errors = sum(n for status, n in served.statuses.items() if status >= 500)
    rss_after = served.rss_mb()
    print(f"\nfuzzed {total} requests in {elapsed:.0f} s: statuses {dict(sorted(served.statuses.items()))}, "
          f"content types {dict(content_types)}, 5xx {server_errors}, RSS {rss_before:.0f} -> {rss_after:.0f} MB")
    assert server_errors == 0
    assert served.statuses[200] > 0 and served.statuses[400] > 0 and served.statuses[401] > 0
    assert httpx.get(f"{served.url}/ready", timeout=10).status_code == 200
    assert served.proc.poll() is None
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_MB, (rss_before, rss_after)
    log = served.log.read_text(errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log, log[-4000:]
    assert KEY not in log
