"""TLS from the gateway to the nodes (the spec's serving.tls) on this host, for real: the gateway role's tls.yml makes
the rack CA and writes the CA file HAProxy verifies the nodes with, the serving role's tls.yml issues the node's
certificate from that CA (community.crypto, delegated to the CA's host), llmrack's engine (`python -m serving`, the
command's --ssl-certfile/--ssl-keyfile) serves with it, and Debian's HAProxy 2.6 runs the role's template with
`ssl verify required` backends: requests and health checks cross over TLS; a node whose certificate is not the
rack CA's is marked down and gets nothing. (That a re-run re-issues nothing is the same x509_certificate_pipe
pattern test_gateway_haproxy.py re-runs.) Prometheus' serving job from the monitoring role's template says https
and the CA file.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from serving.model.tiny import make_tiny
from tests.ansible import role_play
from tests.ansible.test_gateway_haproxy import HAPROXY, _wait_port
from tests.serving.conftest import free_port
from tests.serving.test_tls import _certificates

ROLES = role_play.ROLES
SPEC = {"name": "tls", "environment": "lab", "accelerator": "a100-80g",
        "model": {"name": "deepseek-r1-distill-qwen-1.5b", "source": "/m"},
        "serving": {"max_model_len": 256, "max_num_seqs": 2, "engine": "llmrack", "tls": True}}

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists() or os.geteuid() != 0,
                                reason="needs Debian's haproxy on this host and root (apt-get install haproxy)")

PLAY = """
- name: Gateway, node and Prometheus parts of serving.tls on this host
  hosts: gw
  gather_facts: true
  vars_files:
    - "{roles}/gateway/defaults/main.yml"
    - "{roles}/gateway/vars/main.yml"
    - "{roles}/gateway/vars/Debian.yml"
    - "{roles}/serving/defaults/main.yml"
    - "{roles}/serving/vars/main.yml"
    - "{roles}/monitoring/defaults/main.yml"
  handlers:
    - name: Reload recorded
      ansible.builtin.debug: {{msg: "HAProxy would reload here"}}
      listen: Gateway | Reload HAProxy
  tasks:
    - name: Gateway TLS (the rack CA)
      ansible.builtin.include_tasks: "{roles}/gateway/tasks/tls.yml"
    - name: The node's certificate
      ansible.builtin.include_tasks: "{roles}/serving/tasks/tls.yml"
    - name: HAProxy config
      ansible.builtin.template:
        src: "{roles}/gateway/templates/haproxy.cfg.j2"
        dest: "{{{{ out }}}}/haproxy.cfg"
        mode: "0640"
        validate: "{{{{ __gateway_bin }}}} -c -f %s"
    - name: Prometheus config
      ansible.builtin.template:
        src: "{roles}/monitoring/templates/prometheus.yml.j2"
        dest: "{{{{ out }}}}/prometheus.yml"
        mode: "0640"
"""


def _play(tmp: Path, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return role_play.run(tmp, PLAY.format(roles=ROLES), {"all": {"children": {
        "gateway": {"hosts": {"gw": role_play.LOCAL}}, "serving_nodes": {"hosts": {"gw": {}}},
        "monitoring": {"hosts": {"gw": {}}}}}}, extra)


def _engine(model: Path, port: int, cert: Path, key: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "serving", "--model", str(model), "--host", "127.0.0.1",
                             "--port", str(port), "--max-num-seqs", "2", "--max-model-len", "256",
                             "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


def _ca(path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(path))


def _server_state(admin: Path) -> str:
    """The node's status and last health check as HAProxy's runtime API reports them."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(admin))
        s.sendall(b"show stat\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    header, *rows = out.decode().splitlines()
    cols = header.lstrip("# ").split(",")
    for row in rows:
        fields = dict(zip(cols, row.split(","), strict=False))
        if fields.get("pxname") == "llmrack_serving" and fields.get("svname") == "gw":
            return f"{fields['status']} {fields['check_status']}"
    raise AssertionError(out.decode())


def _wait_state(admin: Path, prefix: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not (state := _server_state(admin)).startswith(prefix):
        assert time.monotonic() < deadline, f"the node is {state!r}, not {prefix!r}, after {timeout:.0f} s"
        time.sleep(0.2)
    return state


@pytest.fixture(scope="module")
def rack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("backend-tls")
    model = make_tiny("qwen2", tmp / "tiny-qwen2", seed=0)
    serving_port, port, metrics = free_port(), free_port(), free_port()
    extra: dict[str, object] = {
        "out": str(tmp), "llmrack_deployment": SPEC, "gateway_tls_dir": str(tmp / "tls"),
        "gateway_tls_ca_dir": str(tmp / "ca"), "gateway_tls_ca_fetch_to": str(tmp / "rack-ca.crt"),
        "gateway_textfile_dir": "", "gateway_admin_socket": str(tmp / "admin.sock"),
        "gateway_bind_address": "127.0.0.1", "gateway_port": port, "gateway_metrics_port": metrics,
        "gateway_management_address": "127.0.0.2", "gateway_backend_port": serving_port,
        "__gateway_config": str(tmp / "haproxy.cfg"), "gateway_health_path": "/ready",
        "gateway_backend_address": "127.0.0.1", "__gateway_user": "haproxy", "ansible_managed": "test",
        "serving_tls_dir": str(tmp / "node-tls"), "serving_tls_ca_dir": str(tmp / "ca"),
        "serving_tls_ca_file": str(tmp / "node-rack-ca.crt"), "serving_container_uid": os.getuid(),
        "monitoring_prometheus_config_dir": str(tmp), "monitoring_scrape_interval": "15s",
        "serving_tls_ca_readers": "none",  # no Prometheus to give the CA to (and reload) on this host
        "__serving_crypto_packages": [],  # the test's Python has cryptography; no package manager runs here
    }
    first = _play(tmp, extra)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    engine = _engine(model, serving_port, tmp / "node-tls" / "tls.crt", tmp / "node-tls" / "tls.key")
    proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(tmp / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        yield {"tmp": tmp, "model": model, "serving_port": serving_port, "url": f"https://127.0.0.1:{port}",
               "engine": engine}
    finally:
        for proc in (proxy, engine):
            proc.send_signal(signal.SIGTERM)
        for proc in (proxy, engine):
            proc.wait(30)


def test_the_gateway_reaches_the_node_over_verified_tls(rack: dict[str, object]) -> None:
    tmp, url = Path(str(rack["tmp"])), str(rack["url"])
    config = (tmp / "haproxy.cfg").read_text()
    assert f"ssl check-ssl verify required ca-file {tmp}/tls/rack-ca.crt" in config
    assert " verifyhost gw" in config
    # The node's certificate: from the rack CA, for its names, its key readable by the engine's user only.
    key = tmp / "node-tls" / "tls.key"
    assert oct(key.stat().st_mode & 0o777) == "0o400"
    assert (tmp / "node-rack-ca.crt").read_text() == (tmp / "ca" / "rack-ca.crt").read_text()
    state = _wait_state(tmp / "admin.sock", "UP", timeout=90)  # the engine loads its model first
    r = httpx.post(f"{url}/v1/completions", verify=_ca(tmp / "rack-ca.crt"), timeout=60,
                   json={"model": "tiny-qwen2", "prompt": "hello", "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 4
    print(f"\nnode behind the gateway over TLS: {state}; completion 200")

    # Prometheus' serving job scrapes the node over https with the rack CA.
    prom = yaml.safe_load((tmp / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "serving"]
    assert job["scheme"] == "https" and job["tls_config"] == {"ca_file": "/etc/llmrack/rack-ca.crt"}


def test_a_node_whose_certificate_is_not_the_rack_cas_is_down(rack: dict[str, object]) -> None:
    tmp, url = Path(str(rack["tmp"])), str(rack["url"])
    engine = rack["engine"]
    assert isinstance(engine, subprocess.Popen)
    engine.send_signal(signal.SIGTERM)
    engine.wait(30)
    (tmp / "other-ca").mkdir()
    other_ca, cert, key = _certificates(tmp / "other-ca")
    impostor = _engine(Path(str(rack["model"])), int(str(rack["serving_port"])), cert, key)
    try:
        deadline = time.monotonic() + 90
        while True:  # the impostor answers TLS (with a certificate of another CA) once its model is loaded
            try:
                httpx.get(f"https://127.0.0.1:{rack['serving_port']}/ready", verify=_ca(other_ca), timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the second engine did not start"
                time.sleep(0.2)
        # Down for its certificate (L6: the TLS handshake failed), not only because the first engine stopped (L4).
        state = _wait_state(tmp / "admin.sock", "DOWN L6", timeout=30)
        r = httpx.get(f"{url}/v1/models", verify=_ca(tmp / "rack-ca.crt"), timeout=30)
        assert r.status_code == 503, r.text
        print(f"\na node with another CA's certificate: {state}; the gateway answers {r.status_code}")
    finally:
        impostor.send_signal(signal.SIGTERM)
        impostor.wait(30)
    rack["engine"] = impostor

