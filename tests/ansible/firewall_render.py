"""The firewall role's rules rendered by Ansible from the role's own template, for one host of a test inventory:
what the role would load on that node, checked by `nft -c` where this host can (root, nftables installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "firewall"
BIN = Path(sys.executable).parent

PLAY = """
- name: Firewall rules of one host
  hosts: {host}
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


def nft_can_check() -> bool:
    return os.geteuid() == 0 and shutil.which("nft") is not None


def render(tmp: Path, inventory: dict[str, Any], host: str, extra: dict[str, Any]) -> Path:
    """Render the rules of `host` (which the inventory gives ansible_connection local) into tmp/llmrack.nft."""
    (tmp / "inventory.yml").write_text(yaml.safe_dump(inventory))
    validate = "nft -c -f %s" if nft_can_check() else "true %s"
    (tmp / "play.yml").write_text(PLAY.format(role=ROLE, host=host, validate=validate))
    out = tmp / "llmrack.nft"
    (tmp / "extra.yml").write_text(yaml.safe_dump({"out": str(out), "ansible_managed": "test", **extra}))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_CONFIG": str(ROLE.parents[1] / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp / "inventory.yml"), str(tmp / "play.yml"),
                           "-e", f"@{tmp / 'extra.yml'}"], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return out
