"""The batch service on the session lab: site.yml's batch play installed it on node1 (the gateway) from the wheels in
the lab's mirror, and the gateway sends /v1/files and /v1/batches to it under its TLS, with the same key. The
official openai client, pointed at the gateway's https URL only, uploads a job and creates the batch; while it runs
the batch service is SIGKILLed (systemd starts it again) and a serving node is stopped and started again. Every line
is answered exactly once, none fails, and the results download through the gateway.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llmrack.lab import lab, serving_artifacts
from llmrack.lab.podman import Podman
from llmrack.lab.state import NodeState, Profile
from serving.readiness import wait_ready
from tests.lab.hosts import node_of

pytestmark = [pytest.mark.lab, pytest.mark.slow]

LINES = 600
MAX_TOKENS = 24
BATCH_UNIT = "llmrack-batch"
SERVING_UNIT = "llmrack-serving"


def _requests(path: Path) -> Path:
    lines = [{"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": serving_artifacts.SERVED_NAME, "max_tokens": MAX_TOKENS, "temperature": 0,
                       "ignore_eos": True, "messages": [{"role": "user", "content": f"summarise document {i}"}]}}
             for i in range(LINES)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _systemctl(podman: Podman, node: NodeState, *args: str) -> str:
    return podman.run("exec", node.container, "systemctl", *args).strip()


def _wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def test_batch_job_through_the_gateway_survives_a_killed_service_and_a_stopped_node(
        lab_up: lab.UpResult, tmp_path: Path) -> None:
    state = lab_up.state
    gateway = state.gateway_url
    assert gateway and gateway.startswith("https://")
    gw_node = next(n for n in state.nodes if n.gateway_port)
    other = node_of(lab_up, Profile.sim_a100)
    assert other is not gw_node
    podman = Podman(state.lab_dir)
    active = podman.run("exec", gw_node.container, "systemctl", "is-active", BATCH_UNIT, check=False).strip()
    failed = [task[:400] for task in lab_up.failed_tasks]
    assert active == "active", f"site.yml left no running batch service on {gw_node.name} ({active}): {failed}"
    # The rack CA is trusted through SSL_CERT_FILE (tests/lab/conftest.py); the client retries what the API
    # says to retry (the gateway's 503 while the batch service restarts).
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=serving_artifacts.api_key(state.lab_dir),
                           max_retries=8, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway}/v1", api_key="not-a-key", max_retries=0).batches.list()

    started = time.monotonic()
    uploaded = client.files.create(file=_requests(tmp_path / "job.jsonl").open("rb"), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"test": "lab"})

    def completed() -> int:
        rc = client.batches.retrieve(batch.id).request_counts
        assert rc is not None
        return rc.completed

    # --- the batch service SIGKILLed mid-job; systemd starts it again and the job resumes from its store -----
    _wait("50 lines answered", lambda: completed() >= 50, 120)
    restarts = int(_systemctl(podman, gw_node, "show", "-p", "NRestarts", "--value", BATCH_UNIT))
    pid = _systemctl(podman, gw_node, "show", "-p", "MainPID", "--value", BATCH_UNIT)
    _systemctl(podman, gw_node, "kill", "-s", "KILL", BATCH_UNIT)
    at_kill = completed()  # answered by the new process, through the gateway (the client retried its 503s)
    assert at_kill < LINES, f"the job ended before the kill landed ({at_kill} lines): make it longer"
    assert int(_systemctl(podman, gw_node, "show", "-p", "NRestarts", "--value", BATCH_UNIT)) == restarts + 1
    assert _systemctl(podman, gw_node, "show", "-p", "MainPID", "--value", BATCH_UNIT) != pid

    # --- a serving node stopped mid-job and started again: its lines go to the other node meanwhile ----------
    _wait("more lines answered after the restart", lambda: completed() >= at_kill + 30, 120)
    _systemctl(podman, other, "stop", SERVING_UNIT)
    at_stop = completed()
    assert at_stop < LINES, f"the job ended before {other.name} stopped ({at_stop} lines): make it longer"
    _wait(f"lines answered with {other.name} stopped", lambda: completed() >= at_stop + 30, 120)
    _systemctl(podman, other, "start", SERVING_UNIT)

    done = _wait("the job's end", lambda: (b := client.batches.retrieve(batch.id)).status in (
        "completed", "failed", "expired", "cancelled") and b, 300, interval=1)
    took = time.monotonic() - started
    assert done.status == "completed", done
    rc = done.request_counts
    assert rc is not None and (rc.total, rc.completed, rc.failed) == (LINES, LINES, 0), rc
    assert done.error_file_id is None and done.output_file_id

    # --- every line answered exactly once, downloaded through the gateway --------------------------------------
    output = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
    ids = Counter(o["custom_id"] for o in output)
    assert len(output) == LINES and set(ids) == {f"line-{i}" for i in range(LINES)}, ids.most_common(3)
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in output)
    tokens = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in output)
    assert tokens == LINES * MAX_TOKENS
    print(f"\nbatch of {LINES} lines through {gateway}: completed in {took:.0f} s ({tokens / took:.0f} tokens/s) "
          f"with {BATCH_UNIT} SIGKILLed at line {at_kill} and {other.name}'s serving stopped at line {at_stop}")

    # --- the batch service's series are on its /metrics (Prometheus scrapes them) --------------------------------
    page = podman.run("exec", gw_node.container, "python3", "-c",
                      "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8100/metrics').read()"
                      ".decode())")
    assert f'batch_id="{batch.id}"' in page

    # The lab is left as it was: the stopped node serves again before the next test.
    try:
        wait_ready(other.serving_url, 240, interval=1)
    except TimeoutError:
        raise AssertionError(f"{other.name}'s serving not ready 240 s after its start") from None
    assert httpx.get(f"{other.serving_url}/ready", timeout=10).status_code == 200
