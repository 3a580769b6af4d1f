"""The gateway role's TLS, key, quota and stats parts on this host, for real: its tasks make the rack CA and the key
map (community.crypto, the role's filter) and hash the stats password (bcrypt), its template is validated and run by
HAProxy 2.6 from Debian in front of a real llmrack server, and its runtime loader replaces the key map in the running
HAProxy. The management address is 127.0.0.2 (loopback too, but not the play's own 127.0.0.1).

Only the parts that need no systemd run here (tls.yml, keys.yml, stats_auth.yml, the template, keys_apply.yml); the
whole role runs on the lab's node1 (tests/lab).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmrack.keys import KeyStore, TenantLimits, load, save
from serving.model.tiny import make_tiny
from tests.ansible import role_play
from tests.serving.conftest import ThreadServer, free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
MANAGEMENT = "127.0.0.2"
STATS_PASSWORD = "stats-secret-for-the-test"

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists() or os.geteuid() != 0,
                                reason="needs Debian's haproxy on this host and root (apt-get install haproxy)")

# The role's task files that need no systemd: the rack CA and certificate, the key map, the stats password, the
# config (haproxy -c), and the key map applied to the running HAProxy.
PLAY = role_play.gateway_play("tls", "keys", "stats_auth", "config", "keys_apply")


@dataclass
class Gateway:
    url: str
    port: int
    ca: Path
    store: Path
    keys: dict[str, str]
    proc: subprocess.Popen[bytes]
    run_play: object
    metrics_port: int


def _play(tmp: Path, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return role_play.run(tmp, PLAY, {"all": {"children": {
        "gateway": {"hosts": {"gw": role_play.LOCAL}}, "serving_nodes": {"hosts": {"backend1": {}}}}}}, extra)


def _wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    model = make_tiny("qwen2", tmp_path_factory.mktemp("model") / "tiny-qwen2", seed=0)
    # The node checks nothing here: the gateway's checks are what is under test.
    with ThreadServer(model, max_num_seqs=8, max_model_len=256, max_queue=64) as srv:
        yield srv


@pytest.fixture(scope="module")
def gateway(backend: ThreadServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    store_path = tmp / "keys.json"
    store = KeyStore(tenants={}, keys=[])
    _, limited = store.create("batch-job", "research", TenantLimits(requests_per_minute=3, max_concurrent=0))
    _, other = store.create("chat-app", "product")
    save(store, store_path)
    port, metrics = free_port(), free_port()
    extra: dict[str, object] = {
        "out": str(tmp), "gateway_tls_dir": str(tmp / "tls"), "gateway_tls_ca_dir": str(tmp / "ca"),
        "gateway_tls_ca_fetch_to": str(tmp / "rack-ca.crt"), "gateway_textfile_dir": str(tmp),
        "gateway_keys_store": str(store_path),
        "gateway_keys_map": str(tmp / "keys.map"), "gateway_admin_socket": str(tmp / "admin.sock"),
        "gateway_bind_address": "127.0.0.1", "gateway_port": port, "gateway_metrics_port": metrics,
        "gateway_management_address": MANAGEMENT, "gateway_backend_port": backend.port,
        "gateway_stats_password": STATS_PASSWORD, "__gateway_config": str(tmp / "haproxy.cfg"),
        "gateway_health_path": "/ready", "gateway_backend_address": "127.0.0.1",
        "__gateway_user": "haproxy", "ansible_managed": "test",
    }
    first = _play(tmp, extra)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(tmp / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_port(port)
        yield Gateway(f"https://127.0.0.1:{port}", port, tmp / "rack-ca.crt", store_path,
                      {"research": limited, "product": other}, proc, lambda: _play(tmp, extra), metrics)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def _client(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, verify=ssl.create_default_context(cafile=str(gw.ca)), timeout=30)


def _complete(c: httpx.Client, key: str) -> httpx.Response:
    return c.post("/v1/completions", headers={"Authorization": f"Bearer {key}"},
                  json={"model": "tiny-qwen2", "prompt": "hi", "max_tokens": 2})


def _handshake(port: int, version: ssl.TLSVersion, ciphers: str | None = None) -> str | None:
    """The negotiated cipher, or None when the gateway refused the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            return tls.cipher()[0]  # type: ignore[index]
    except (ssl.SSLError, ConnectionError):
        return None


def test_tls_12_and_13_only_with_strong_ciphers_and_a_chain_that_verifies(gateway: Gateway) -> None:
    assert _handshake(gateway.port, ssl.TLSVersion.TLSv1_3) in {
        "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
    assert _handshake(gateway.port, ssl.TLSVersion.TLSv1_2) in {"ECDHE-ECDSA-AES128-GCM-SHA256",
                                                                 "ECDHE-ECDSA-AES256-GCM-SHA384",
                                                                 "ECDHE-ECDSA-CHACHA20-POLY1305"}
    # Python's OpenSSL may not offer TLS 1.0/1.1 at all; either way no handshake may succeed.
    for old in (ssl.TLSVersion["TLSv1"], ssl.TLSVersion["TLSv1_1"]):  # by name: deprecated in the enum
        assert _handshake(gateway.port, old, "ALL:@SECLEVEL=0") is None
    for weak in ("AES128-SHA", "AES256-SHA256", "ECDHE-ECDSA-AES128-SHA", "DHE-RSA-AES128-SHA"):
        assert _handshake(gateway.port, ssl.TLSVersion.TLSv1_2, weak) is None, weak
    # The rack CA the play made verifies the chain for the host's name and for 127.0.0.1.
    ctx = ssl.create_default_context(cafile=str(gateway.ca))
    with socket.create_connection(("127.0.0.1", gateway.port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}
    # Its expiry, published for the alert: 397 days from now (the role's default validity).
    prom = (gateway.ca.parent / "llmrack-tls.prom").read_text()
    not_after = float(prom.strip().splitlines()[-1].rsplit(" ", 1)[1])
    assert abs((not_after - time.time()) / 86400 - 397) < 1, prom
    # Plain HTTP on the API port gets no HTTP answer.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{gateway.port}/v1/models", timeout=5)


def test_the_gateway_refuses_unknown_keys_and_passes_known_ones(gateway: Gateway) -> None:
    with _client(gateway) as c:
        r = c.get("/v1/models", headers={"Authorization": "Bearer lrk-not-a-key"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert c.get("/v1/models").status_code == 401
        assert _complete(c, gateway.keys["product"]).status_code == 200
        assert r.headers.get("www-authenticate") == "Bearer"


def test_a_tenant_over_its_rate_gets_429_with_retry_after_the_other_does_not(gateway: Gateway) -> None:
    with _client(gateway) as c:
        codes = [_complete(c, gateway.keys["research"]) for _ in range(5)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429, 429]
        assert codes[3].headers["retry-after"] == "1"
        assert codes[3].json()["error"]["code"] == "tenant_rate_limit"
        assert all(_complete(c, gateway.keys["product"]).status_code == 200 for _ in range(5))


def test_a_revoked_key_is_refused_after_the_play_without_a_reload(gateway: Gateway) -> None:
    store = load(gateway.store)
    store.revoke("chat-app")
    _, fresh = store.create("chat-app-2", "product")
    save(store, gateway.store)
    again = gateway.run_play()  # type: ignore[operator]
    assert again.returncode == 0, again.stdout[-4000:]
    loaded = again.stdout.split("TASK [Gateway | Load the key map into the running HAProxy]")[1]
    assert loaded.split("*\n", 1)[1].strip().splitlines()[0] == "changed: [gw]", loaded
    with _client(gateway) as c:
        assert _complete(c, gateway.keys["product"]).status_code == 401
        assert _complete(c, fresh).status_code == 200
    assert gateway.proc.poll() is None  # the same HAProxy process: nothing restarted


def test_the_stats_page_asks_for_credentials_and_metrics_do_not(gateway: Gateway) -> None:
    config = (gateway.ca.parent / "haproxy.cfg").read_text()
    assert STATS_PASSWORD not in config and " password $2b$" in config  # only the bcrypt hash
    stats = f"http://{MANAGEMENT}:{gateway.metrics_port}/stats"
    assert httpx.get(stats, timeout=10).status_code == 401
    assert httpx.get(stats, auth=("llmrack", "wrong"), timeout=10).status_code == 401
    assert httpx.get(stats, auth=("llmrack", STATS_PASSWORD), timeout=10).status_code == 200
    assert httpx.get(f"http://{MANAGEMENT}:{gateway.metrics_port}/metrics", timeout=10).status_code == 200


def test_a_second_run_changes_nothing(gateway: Gateway) -> None:
    again = gateway.run_play()  # type: ignore[operator]
    assert again.returncode == 0
    recap = [line for line in again.stdout.splitlines() if line.startswith("gw ")]
    assert recap and "changed=0" in recap[0], again.stdout[-3000:]
