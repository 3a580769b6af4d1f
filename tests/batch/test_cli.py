"""`llmrack batch submit | status | results` against a running service, as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmrack.batch.client import progress
from llmrack.batch.protocol import Batch, BatchUsage, RequestCounts
from tests.batch.conftest import KEYS, BatchService, requests_file
from tests.serving.conftest import ThreadServer


@pytest.fixture(scope="module")
def service(upstream: ThreadServer, key_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchService]:
    svc = BatchService(upstream.url, tmp_path_factory.mktemp("state"), "--api-key-file", str(key_file))
    yield svc.start()
    svc.stop()


def llmrack(service: BatchService, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMRACK_BATCH_URL": service.url, "LLMRACK_API_KEY": KEYS["alice"], "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "llmrack", "batch", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_submit_watch_and_results(service: BatchService, upstream: ThreadServer, tmp_path: Path) -> None:
    bad = {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": upstream.settings.name, "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 100000}}
    path = requests_file(tmp_path / "in.jsonl", 6, str(upstream.settings.name), extra=[bad])
    submitted = llmrack(service, "submit", str(path))
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    assert batch_id.startswith("batch_") and "7 lines" in submitted.stderr

    watched = llmrack(service, "status", batch_id, "--watch")
    assert watched.returncode == 0, watched.stderr
    assert "completed" in watched.stdout and "done 6" in watched.stdout and "failed 1" in watched.stdout
    assert "tokens/s" in watched.stdout

    out = llmrack(service, "results", batch_id)
    assert sorted(json.loads(line)["custom_id"] for line in out.stdout.splitlines()) == [f"req-{i}" for i in range(6)]
    errs = llmrack(service, "results", batch_id, "--errors", "--output", str(tmp_path / "errors.jsonl"))
    assert errs.returncode == 0 and "1 lines" in errs.stderr
    assert json.loads((tmp_path / "errors.jsonl").read_text())["custom_id"] == "bad"

    as_json = json.loads(llmrack(service, "status", batch_id, "--json").stdout)
    assert as_json["id"] == batch_id and as_json["request_counts"]["completed"] == 6


def test_mistakes_are_one_message_and_a_non_zero_exit(service: BatchService, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"custom_id": "a", "url": "/v1/chat/completions"\n')
    for args, says in ((["submit", str(tmp_path / "bad.jsonl")], "line 1: is not JSON"),
                       (["submit", str(tmp_path / "missing.jsonl")], "No such file"),
                       (["status", "batch_nope"], "no batch 'batch_nope'"),
                       (["status", "x", "--url", "http://127.0.0.1:9"], "cannot reach the batch service")):
        result = llmrack(service, *args)
        assert result.returncode in (1, 2) and says in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_progress_rates_come_from_the_job_s_own_clock() -> None:
    batch = Batch(id="batch_x", endpoint="/v1/chat/completions", input_file_id="file-x", completion_window="24h",
                  status="in_progress", created_at=1000, in_progress_at=1000,
                  request_counts=RequestCounts(total=100, completed=30, failed=10),
                  usage=BatchUsage(input_tokens=0, output_tokens=800, total_tokens=800))
    p = progress(batch, now=1020.0)
    assert (p.done, p.tokens_per_s) == (40, 800 / 20)
    assert p.eta_s == pytest.approx(60 * 20 / 40)  # 60 lines left at 40 lines per 20 s
    ended = progress(batch.model_copy(update={"status": "completed", "completed_at": 1010}), now=5000.0)
    assert ended.eta_s is None and ended.tokens_per_s == 800 / 10
