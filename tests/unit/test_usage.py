"""`llmrack usage`: the per-tenant table from Prometheus' query API, and clear errors when it cannot be asked."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Per counter, the vector Prometheus 2.42 answered for `sum by (tenant) (increase(...[24h]))` in the lab
# (increase() extrapolates, hence the fractions).
ANSWERS = {
    "llmrack_tenant_requests_total": [("alpha", "120.00000000000001"), ("beta", "37.99999")],
    "llmrack_tenant_prompt_tokens_total": [("alpha", "1920.0000000000002"), ("beta", "608")],
    "llmrack_tenant_generation_tokens_total": [("alpha", "3840"), ("beta", "1216.0000001")],
}


class _Prometheus(BaseHTTPRequestHandler):
    queries: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)["query"][0]
        self.queries.append(query)
        counter = next(c for c in ANSWERS if c in query)
        result = [{"metric": {"tenant": t}, "value": [1765090000.0, v]} for t, v in ANSWERS[counter]]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def llmrack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmrack", *args], capture_output=True, text=True, cwd=ROOT,
                          check=False, timeout=60)


def test_usage_table_per_tenant(prometheus: str) -> None:
    result = llmrack("usage", "--prometheus", prometheus, "--since", "24h", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"tenant": "alpha", "requests": 120, "prompt_tokens": 1920, "completion_tokens": 3840},
        {"tenant": "beta", "requests": 38, "prompt_tokens": 608, "completion_tokens": 1216}]
    assert "sum by (tenant) (increase(llmrack_tenant_requests_total{}[24h]))" in _Prometheus.queries
    table = llmrack("usage", "--prometheus", prometheus, "--since", "24h")
    assert "alpha" in table.stdout and "5760" in table.stdout  # total tokens of alpha


def test_usage_mistakes_exit_2() -> None:
    bad = llmrack("usage", "--prometheus", "http://127.0.0.1:1", "--since", "yesterday")
    assert bad.returncode == 2 and "not a Prometheus duration" in bad.stderr
    down = llmrack("usage", "--prometheus", "http://127.0.0.1:1", "--since", "24h")
    assert down.returncode == 2 and "cannot reach Prometheus" in down.stderr and "Traceback" not in down.stderr
