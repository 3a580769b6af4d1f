"""Graceful drain of a real server process (`python -m serving`, the container entrypoint) on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import free_port, wait_ready

pytestmark = pytest.mark.slow


def start(model: Path, *flags: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
         "--threads", "1", "--max-model-len", "1024", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
    except TimeoutError:
        proc.kill()
        raise AssertionError(proc.communicate()[0]) from None
    return proc, url


def stream_in_background(url: str, max_tokens: int) -> tuple[threading.Thread, dict]:
    result: dict = {"lines": []}
    body = {"model": "m", "prompt": "the rack", "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
            "temperature": 0}

    def go() -> None:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            result["status"] = r.status_code
            for line in r.iter_lines():
                if line:
                    result["lines"].append(line)

    thread = threading.Thread(target=go)
    thread.start()
    deadline = time.monotonic() + 20
    while len(result["lines"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert result["lines"], "the stream did not start"
    return thread, result


def test_sigterm_drains_then_exits_zero(qwen2_dir: Path) -> None:
    proc, url = start(qwen2_dir, "--served-model-name", "m", "--drain-timeout", "60")
    thread, result = stream_in_background(url, 400)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    ready = httpx.get(f"{url}/ready")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "draining"
    refused = httpx.post(f"{url}/v1/completions", json={"model": "m", "prompt": "x", "max_tokens": 2})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    # A load balancer's probes are not requests: of the 503s, only the refused completion counts as a failure.
    assert all(httpx.get(f"{url}/ready").status_code == 503 for _ in range(3))
    metrics = httpx.get(f"{url}/metrics").text
    assert 'llmrack_request_failure_total{model_name="m",status="503"} 1.0' in metrics, metrics
    assert proc.poll() is None, "exited before the in-flight request finished"
    thread.join(60)
    assert result["status"] == 200 and result["lines"][-1] == "data: [DONE]"
    assert '"finish_reason":"length"' in result["lines"][-2]  # it ran to completion, not aborted
    assert proc.wait(30) == 0
    assert "drained" in proc.stdout.read()


def test_drain_timeout_aborts_what_is_left(qwen2_dir: Path) -> None:
    proc, url = start(qwen2_dir, "--served-model-name", "m", "--drain-timeout", "0.5")
    thread, result = stream_in_background(url, 1000)
    proc.send_signal(signal.SIGTERM)
    thread.join(60)
    assert proc.wait(30) == 0
    assert result["lines"][-1] == "data: [DONE]"
    assert '"finish_reason":"abort"' in result["lines"][-2]
    assert len(result["lines"]) < 1000
