"""The firewall role's rules, rendered by Ansible from an inventory and loaded into real nftables in a network
namespace of this host: a node that is a serving node answers its serving port only to the gateway and Prometheus,
its exporter only to Prometheus, everything to the admin network, and nothing to any other host.

The namespace stands in for a node (its own interfaces and ruleset); the host side of a veth pair holds one
address per role (gateway, Prometheus, operator, another node), and each connection is made from one of them.
The role's whole run on lab nodes is in tests/lab.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ansible import firewall_render

NS = f"llmrack-fw-{os.getpid()}"
NET = f"10.231.{os.getpid() % 250}"  # per process: two test processes at once get namespaces that do not collide
NODE, GATEWAY, PROMETHEUS, ADMIN, OTHER, PEER = (f"{NET}.{i}" for i in (10, 1, 2, 3, 4, 5))
SERVING, EXPORTER, SSH = 8000, 9100, 22
LAUNCHER, EPHEMERAL = 29500, 40123  # vLLM's --master-port; a port gloo/NCCL/vLLM's queues bound to 0

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
    reason="needs root, nft and ip on this host (apt-get install nftables iproute2)")

def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def _inventory(kind_group: str) -> dict[str, object]:
    return {"all": {"children": {
        "gateway": {"hosts": {"gw": {"firewall_address": GATEWAY}}},
        "monitoring": {"hosts": {"mon": {"firewall_address": PROMETHEUS}}},
        # node1 and node3 are one replica (leader and worker); node2 is a replica of its own.
        "serving_nodes": {"hosts": {"node1": {"firewall_address": NODE, "ansible_connection": "local",
                                              "ansible_python_interpreter": sys.executable,
                                              "llmrack_replica": "node1"},
                                    "node2": {"firewall_address": OTHER},
                                    "node3": {"firewall_address": PEER, "llmrack_replica": "node1"}}},
        kind_group: {"hosts": {"node1": {}, "node3": {}}}}}}


def _render(tmp: Path, kind_group: str = "nvidia_nodes") -> Path:
    return firewall_render.render(tmp, _inventory(kind_group), "node1", {
        "firewall_admin_networks": [f"{ADMIN}/32"], "firewall_serving_port": SERVING})


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("firewall")
    rules = _render(tmp)
    host_if, node_if = f"fwh{os.getpid() % 10000}", f"fwn{os.getpid() % 10000}"
    _run("ip", "netns", "add", NS)
    listeners: list[subprocess.Popen[bytes]] = []
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if)
        _run("ip", "link", "set", node_if, "netns", NS)
        for address in (GATEWAY, PROMETHEUS, ADMIN, OTHER, PEER):
            _run("ip", "addr", "add", f"{address}/32", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "route", "add", f"{NODE}/32", "dev", host_if)
        _run("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NODE}/24", "dev", node_if)
        _run("ip", "netns", "exec", NS, "ip", "link", "set", node_if, "up")
        _run("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        _run("ip", "netns", "exec", NS, "nft", "-f", str(rules))
        for port in (SERVING, EXPORTER, SSH, LAUNCHER, EPHEMERAL):
            listeners.append(subprocess.Popen(
                ["ip", "netns", "exec", NS, sys.executable, "-m", "http.server", "-b", NODE, str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.5)
        yield rules
    finally:
        for p in listeners:
            p.terminate()
            p.wait(10)
        _run("ip", "link", "del", host_if, check=False)
        _run("ip", "netns", "del", NS, check=False)


def _answers(source: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(1.0)
        try:
            s.connect((NODE, port))
        except OSError:  # dropped: the connect times out
            return False
        return True


SOURCE = {"gateway": GATEWAY, "prometheus": PROMETHEUS, "operator": ADMIN, "another node": OTHER, "replica peer": PEER}


@pytest.mark.parametrize(("who", "port", "open_"), [
    ("gateway", SERVING, True),
    ("prometheus", SERVING, True),
    ("another node", SERVING, False),
    ("prometheus", EXPORTER, True),
    ("gateway", EXPORTER, False),
    ("another node", EXPORTER, False),
    ("operator", SSH, True),
    ("operator", SERVING, True),
    ("gateway", SSH, False),
    ("another node", SSH, False),
    ("replica peer", LAUNCHER, True),
    ("replica peer", EPHEMERAL, True),
    ("replica peer", SSH, True),  # NVIDIA nodes: mpirun starts the fabric check's ranks over SSH
    ("replica peer", EXPORTER, False),
    ("another node", LAUNCHER, False),
    ("another node", EPHEMERAL, False),
])
def test_who_reaches_which_port(node: Path, who: str, port: int, open_: bool) -> None:
    source = SOURCE[who]
    assert _answers(source, port) is open_, f"{who} ({source}) -> :{port} should be {'open' if open_ else 'closed'}"


def test_drops_are_counted(node: Path) -> None:
    _answers(OTHER, SERVING)
    listed = _run("ip", "netns", "exec", NS, "nft", "list", "chain", "inet", "llmrack", "input").stdout
    assert "policy drop" in listed
    packets = int(listed.split("counter packets ")[1].split()[0])
    assert packets > 0


def test_a_cpu_replica_takes_no_ssh_from_its_peers(tmp_path: Path) -> None:
    # CPU replicas run no mpirun: their members reach each other's collective ports only.
    rules = _render(tmp_path, kind_group="cpu_nodes").read_text()
    assert "tcp dport { 29500-29600, 32768-60999 } ip saddr @replica4 accept" in rules
    assert "tcp dport 22 ip saddr @replica4" not in rules
    (tmp_path / "nvidia").mkdir()
    assert "tcp dport 22 ip saddr @replica4 accept" in _render(tmp_path / "nvidia").read_text()
