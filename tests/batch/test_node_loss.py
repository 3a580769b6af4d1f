"""A node killed (SIGKILL) mid-job, with requests in flight: the batch service keeps those lines, retries while the
node is away, and the job completes when it returns, every line answered once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llmrack.contracts import metrics as names
from tests.batch.conftest import BatchService, completed_at_least, counts, jsonl_of, submit, wait_for
from tests.serving.conftest import free_port, wait_ready


def test_a_node_killed_mid_job_is_waited_for_and_the_job_completes(tiny_model: Path, tmp_path: Path) -> None:
    port = free_port()
    node_argv = [sys.executable, "-m", "llmrack", "serve", "--model", str(tiny_model), "--port", str(port),
                 "--host", "127.0.0.1", "--max-num-seqs", "8", "--threads", "1", "--log-level", "warning"]
    node = subprocess.Popen(node_argv)
    svc = BatchService(f"http://127.0.0.1:{port}", tmp_path / "state", "--max-inflight", "4", "--retry-for", "120")
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        client = svc.start().client("unused")
        batch = submit(client, tmp_path / "in.jsonl", 30, tiny_model.name, max_tokens=16)
        done = completed_at_least(client, batch.id, 5)
        node.kill()  # the node dies with requests in flight
        node.wait(10)
        assert done < 30
        time.sleep(2.0)  # the service meets connection errors meanwhile, and keeps the lines
        node = subprocess.Popen(node_argv)
        finished = wait_for(client, batch.id, timeout=180)
        output = jsonl_of(client, finished.output_file_id)
        page = httpx.get(f"{svc.url}/metrics").text
    finally:
        svc.stop()
        node.kill()
        node.wait(10)
    assert counts(finished) == (30, 30, 0) and finished.error_file_id is None
    assert sorted(o["custom_id"] for o in output) == sorted(f"req-{i}" for i in range(30))
    retries = {s.labels["reason"]: s.value for f in text_string_to_metric_families(page) for s in f.samples
               if s.name == names.counter_series(names.BATCH_UPSTREAM_RETRIES)}
    assert retries.get("transport", 0) > 0
