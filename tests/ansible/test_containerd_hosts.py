"""The containerd role's registry hosts files, rendered by ansible-playbook from the role's own vars and template:
the rack's registry (CA, or plain HTTP on a closed network) and registry mirrors merged per registry host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLE = ROOT / "ansible" / "roles" / "containerd"


def test_hosts_files_for_registries_and_mirrors(tmp_path: Path) -> None:
    certs = tmp_path / "certs.d"
    given = {
        "containerd_registry_mirrors": {"docker.io": ["https://mirror.rack1.example"]},
        "containerd_registries": {"10.89.0.200:5000": {"plain_http": True},
                                  "registry.rack1.example": {"ca": "-----BEGIN CERTIFICATE-----\n"},
                                  "docker.io": {"mirrors": ["https://second.rack1.example"]}},
        "containerd_registry_config_dir": str(certs), "ansible_python_interpreter": sys.executable,
    }
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local",
             "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
             "tasks": [{"ansible.builtin.file": {"path": f"{certs}/{{{{ item }}}}", "state": "directory",
                                                 "mode": "0755"},
                        "loop": "{{ __containerd_registry_hosts }}"},
                       {"ansible.builtin.template": {"src": str(ROLE / "templates" / "hosts.toml.j2"),
                                                     "dest": f"{certs}/{{{{ item }}}}/hosts.toml", "mode": "0644"},
                        "loop": "{{ __containerd_registry_hosts }}"}]}]
    (tmp_path / "vars.json").write_text(json.dumps(given))
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"), "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-e", f"@{tmp_path / 'vars.json'}",
                           str(tmp_path / "play.yml")], cwd=ROOT / "ansible", env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    hosts = {d.name: tomllib.loads((d / "hosts.toml").read_text()) for d in certs.iterdir()}
    # containerd 1.6 (Debian 12) refuses a hosts.toml without a [host] table: a registry is its own host.
    lab = "http://10.89.0.200:5000"
    assert hosts["10.89.0.200:5000"] == {"server": lab, "host": {lab: {"capabilities": ["pull", "resolve"]}}}
    ca = f"{certs}/registry.rack1.example/ca.crt"
    assert hosts["registry.rack1.example"] == {
        "server": "https://registry.rack1.example", "ca": ca,
        "host": {"https://registry.rack1.example": {"capabilities": ["pull", "resolve"], "ca": ca}}}
    assert hosts["docker.io"]["server"] == "https://docker.io"
    assert list(hosts["docker.io"]["host"]) == ["https://mirror.rack1.example", "https://second.rack1.example"]
    assert all(h["capabilities"] == ["pull", "resolve"] for h in hosts["docker.io"]["host"].values())
