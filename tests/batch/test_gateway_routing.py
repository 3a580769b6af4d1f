"""The gateway role's batch parts, for real on this host: its template (rendered by the role's own tasks, checked by
`haproxy -c`) run by Debian's HAProxy sends /v1/files and /v1/batches to a real `llmrack batch serve` with the
client's own key, under the gateway's TLS and key checks, even where the nodes get the rack's backend key instead;
the batch service's lines come back through the same gateway to a real llmrack server, which is given at most the
engine's batch size at once (server maxconn)."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.ansible import role_play
from tests.ansible.test_gateway_haproxy import HAPROXY, _wait_port
from tests.batch.conftest import KEYS, BatchService, counts, jsonl_of, requests_file, wait_for
from tests.serving.conftest import ThreadServer, free_port

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists() or os.geteuid() != 0,
                                reason="needs Debian's haproxy on this host and root (apt-get install haproxy)")

MAXCONN = 4

# The role's own tasks for what needs no systemd: the rack CA and certificate, the key map, the config (haproxy -c).
PLAY = role_play.gateway_play("tls", "keys", "config")


def _play(tmp: Path, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return role_play.run(tmp, PLAY, {"all": {"children": {
        "gateway": {"hosts": {"gw": role_play.LOCAL}},
        # Two serving hosts: each server line must stay a line of its own (the maxconn suffix).
        "serving_nodes": {"hosts": {"backend1": {}, "backend2": {}}}}}}, extra)


@pytest.fixture
def gateway_and_batch(upstream: ThreadServer, key_file: Path, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    port = free_port()
    batch = BatchService(f"https://127.0.0.1:{port}", tmp_path / "state", "--api-key-file", str(key_file),
                         "--upstream-api-key-file", str(tmp_path / "upstream-key"),
                         "--upstream-ca-file", str(tmp_path / "rack-ca.crt"))
    extra: dict[str, object] = {
        "out": str(tmp_path), "gateway_tls_dir": str(tmp_path / "tls"), "gateway_tls_ca_dir": str(tmp_path / "ca"),
        "gateway_tls_ca_fetch_to": str(tmp_path / "rack-ca.crt"), "gateway_textfile_dir": str(tmp_path),
        "gateway_keys_store": str(key_file), "gateway_keys_map": str(tmp_path / "keys.map"),
        "gateway_admin_socket": str(tmp_path / "admin.sock"), "gateway_bind_address": "127.0.0.1",
        "gateway_port": port, "gateway_metrics_port": free_port(), "gateway_management_address": "127.0.0.1",
        "gateway_backend_port": upstream.port, "gateway_health_path": "/ready", "gateway_backend_address": "127.0.0.1",
        # The nodes get the rack's backend key, never a tenant's; the batch service must still see the tenant's.
        "gateway_backend_api_key": "the-nodes-key",
        # The batch service on the gateway host itself (the play's inventory has one host, gw, in group gateway).
        "gateway_batch_group": "gateway", "gateway_batch_port": batch.port, "gateway_server_maxconn": MAXCONN,
        "__gateway_user": "haproxy", "ansible_managed": "test",
    }
    played = _play(tmp_path, extra)
    assert played.returncode == 0, played.stdout[-4000:] + played.stderr[-2000:]
    # The service's own key at the gateway: tenant bob's.
    (tmp_path / "upstream-key").write_text(KEYS["bob"] + "\n")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_port(port)
        batch.start()
        # HAProxy sends to the batch service once its health check has seen it up (rise checks).
        ctx = ssl.create_default_context(cafile=str(tmp_path / "rack-ca.crt"))
        deadline = time.monotonic() + 30
        while httpx.get(f"https://127.0.0.1:{port}/v1/files", verify=ctx, timeout=5,
                        headers={"Authorization": f"Bearer {KEYS['alice']}"}).status_code != 200:
            assert time.monotonic() < deadline, "the gateway did not find the batch service up within 30 s"
            time.sleep(0.2)
        yield f"https://127.0.0.1:{port}", tmp_path / "rack-ca.crt", (tmp_path / "haproxy.cfg").read_text()
    finally:
        batch.stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def _client(url: str, ca: Path, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=3, timeout=60,
                         http_client=httpx.Client(verify=ssl.create_default_context(cafile=str(ca))))


def test_batch_api_through_the_gateway_with_the_clients_own_key(
        gateway_and_batch: tuple[str, Path, str], upstream: ThreadServer, tmp_path: Path) -> None:
    url, ca, cfg = gateway_and_batch
    servers = re.findall(r"^\s*server (\S+) (\S+)(.*)$", cfg, re.MULTILINE)
    serving = [s for s in servers if not s[0].startswith("batch-")]
    assert [s[0] for s in serving] == ["backend1", "backend2"], servers
    assert all(s[2].split() == ["weight", "100", "maxconn", str(MAXCONN)] for s in serving), servers
    assert [s[1] for s in servers if s[0].startswith("batch-")] == [f"127.0.0.1:{gateway_and_batch_port(cfg)}"]

    alice = _client(url, ca, KEYS["alice"])
    with pytest.raises(openai.AuthenticationError):  # the gateway's own key check
        _client(url, ca, "not-a-key").batches.list()
    model = str(upstream.settings.name)
    uploaded = alice.files.create(file=requests_file(tmp_path / "in.jsonl", 20, model).open("rb"), purpose="batch")
    done = wait_for(alice, alice.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                completion_window="24h").id)
    assert counts(done) == (20, 20, 0)
    assert sorted(o["custom_id"] for o in jsonl_of(alice, done.output_file_id)) == sorted(
        f"req-{i}" for i in range(20))
    # The job is alice's (her key reached the batch service), not bob's (the service's) nor the nodes' key's.
    bob = _client(url, ca, KEYS["bob"])
    assert [b.id for b in bob.batches.list().data] == []
    assert [b.id for b in alice.batches.list().data] == [done.id]


def gateway_and_batch_port(cfg: str) -> int:
    found = re.search(r"^\s*server batch-\S+ 127\.0\.0\.1:(\d+)", cfg, re.MULTILINE)
    assert found, cfg
    return int(found.group(1))
