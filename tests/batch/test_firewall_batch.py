"""The firewall role lets the gateways and Prometheus reach the batch service on a batch host, and no one else: its
rules, rendered by Ansible from the role's template for an inventory with a batch group, pass `nft -c` and open the
batch port to exactly those two sets."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.ansible import firewall_render


@pytest.mark.parametrize(("batch_host", "port"), [("gw", 8123), ("mon", None)])
def test_the_batch_port_is_open_to_gateways_and_prometheus_only(tmp_path: Path, batch_host: str,
                                                                 port: int | None) -> None:
    hosts = {"gw": {"firewall_address": "10.9.0.2", "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable, **({"batch_port": port} if port else {})},
             "mon": {"firewall_address": "10.9.0.3"}}
    inventory = {"all": {"children": {
        "gateway": {"hosts": {"gw": hosts["gw"]}}, "monitoring": {"hosts": {"mon": hosts["mon"]}},
        "serving_nodes": {"hosts": {"node1": {"firewall_address": "10.9.0.4"}}},
        "batch": {"hosts": {batch_host: {}}}}}}
    # nft checks the rules where it can (root); elsewhere the rendered text is still checked below.
    out = firewall_render.render(tmp_path, inventory, "gw", {
        "firewall_serving_port": 8000, "firewall_admin_networks": ["10.9.9.0/24"]})
    rules = re.findall(r"tcp dport (\d+) ip6? saddr @(\w+) accept", out.read_text())
    batch = sorted((s for p, s in rules if p == str(port)), key=str) if port else []
    if batch_host == "gw":
        assert batch == ["gateways4", "gateways6", "monitoring4", "monitoring6"]
    else:  # gw is not a batch host here: nothing opens the batch service's default port on it
        assert not [r for r in rules if r[0] == "8100"]
