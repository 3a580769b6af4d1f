"""The firewall role's rules rendered by Ansible from the role's own template, for one host of a test inventory:
what the role would load on that node, checked by `nft -c` where this host can (root, nftables installed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tests.ansible import role_play

ROLE = role_play.ROLES / "firewall"

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
    validate = "nft -c -f %s" if nft_can_check() else "true %s"
    out = tmp / "llmrack.nft"
    proc = role_play.run(tmp, PLAY.format(role=ROLE, host=host, validate=validate), inventory,
                         {"out": str(out), "ansible_managed": "test", **extra})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return out
