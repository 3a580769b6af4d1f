"""The firewall role lets the gateways and Prometheus reach the batch service on a batch host, and no one else: its
rules, rendered by Ansible from the role's template for an inventory with a batch group, pass `nft -c` and open the
batch port to exactly those two sets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "firewall"
BIN = Path(sys.executable).parent

PLAY = """
- name: Firewall rules of one batch host
  hosts: gw
  gather_facts: false
  vars_files: ["{role}/defaults/main.yml", "{role}/vars/main.yml"]
  tasks:
    - name: Render
      ansible.builtin.template:
        src: "{role}/templates/llmrack.nft.j2"
        dest: "{{{{ out }}}}"
        mode: "0644"
        validate: "{validate}"
"""


@pytest.mark.parametrize(("batch_host", "port"), [("gw", 8123), ("mon", None)])
def test_the_batch_port_is_open_to_gateways_and_prometheus_only(tmp_path: Path, batch_host: str,
                                                                 port: int | None) -> None:
    # nft checks the rules where it can (root); elsewhere the rendered text is still checked below.
    validate = "nft -c -f %s" if os.geteuid() == 0 and shutil.which("nft") else "true %s"
    hosts = {"gw": {"firewall_address": "10.9.0.2", "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable, **({"batch_port": port} if port else {})},
             "mon": {"firewall_address": "10.9.0.3"}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump({"all": {"children": {
        "gateway": {"hosts": {"gw": hosts["gw"]}}, "monitoring": {"hosts": {"mon": hosts["mon"]}},
        "serving_nodes": {"hosts": {"node1": {"firewall_address": "10.9.0.4"}}},
        "batch": {"hosts": {batch_host: {}}}}}}))
    (tmp_path / "play.yml").write_text(PLAY.format(role=ROLE, validate=validate))
    out = tmp_path / "llmrack.nft"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_CONFIG": str(ROLE.parents[1] / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
                           str(tmp_path / "play.yml"), "-e", f"out={out}", "-e", "firewall_serving_port=8000",
                           "-e", '{"firewall_admin_networks": ["10.9.9.0/24"]}', "-e", "ansible_managed=test"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    rules = re.findall(r"tcp dport (\d+) ip6? saddr @(\w+) accept", out.read_text())
    batch = sorted((s for p, s in rules if p == str(port)), key=str) if port else []
    if batch_host == "gw":
        assert batch == ["gateways4", "gateways6", "monitoring4", "monitoring6"]
    else:  # gw is not a batch host here: nothing opens the batch service's default port on it
        assert not [r for r in rules if r[0] == "8100"]
