"""Runs a play made of roles' own task files against this host (ansible_connection local), the way the host tests
check a role's templates and tasks without systemd: the play, its inventory and its extra vars written to a
temporary directory, ansible-playbook from this venv, the roles' and the playbooks' filters on the path (what
site.yml's plays see)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
ROLES = ANSIBLE / "roles"
BIN = Path(sys.executable).parent
LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}

# The gateway role's task files that need no systemd, in the order the role runs them; a test picks the ones it needs.
GATEWAY_TASKS = {
    "tls": """    - name: TLS
      ansible.builtin.include_tasks: "{role}/tasks/tls.yml"
""",
    "keys": """    - name: Key map
      ansible.builtin.include_tasks: "{role}/tasks/keys.yml"
""",
    "stats_auth": """    - name: Stats password
      ansible.builtin.include_tasks: "{role}/tasks/stats_auth.yml"
""",
    "config": """    - name: Config
      ansible.builtin.template:
        src: "{role}/templates/haproxy.cfg.j2"
        dest: "{{{{ out }}}}/haproxy.cfg"
        mode: "0640"
        validate: "{{{{ __gateway_bin }}}} -c -f %s"
""",
    "keys_apply": """    - name: Key map into a running HAProxy
      ansible.builtin.include_tasks: "{role}/tasks/keys_apply.yml"
""",
}

GATEWAY_PLAY = """
- name: Gateway parts on this host
  hosts: gw
  gather_facts: true
  vars_files: ["{role}/defaults/main.yml", "{role}/vars/main.yml", "{role}/vars/Debian.yml"]
  handlers:
    - name: Reload recorded
      ansible.builtin.debug: {{msg: "HAProxy would reload here"}}
      listen: Gateway | Reload HAProxy
  tasks:
"""


def gateway_play(*tasks: str) -> str:
    """A play on host gw of the gateway role's `tasks` (keys of GATEWAY_TASKS); HAProxy's reload is recorded."""
    role = ROLES / "gateway"
    return GATEWAY_PLAY.format(role=role) + "".join(GATEWAY_TASKS[t].format(role=role) for t in tasks)


def run(tmp: Path, play: str, inventory: dict[str, Any], extra: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """ansible-playbook `play` on `inventory` with `extra` as extra vars (a file: lists and dicts stay typed)."""
    (tmp / "play.yml").write_text(play)
    if not (tmp / "files").exists():  # where a play outside the gateway role finds the role's files
        (tmp / "files").symlink_to(ROLES / "gateway" / "files")
    (tmp / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp / "extra.yml").write_text(yaml.safe_dump(extra))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
           "ANSIBLE_FILTER_PLUGINS": f"{ROLES / 'gateway' / 'filter_plugins'}{os.pathsep}"
                                     f"{ANSIBLE / 'playbooks' / 'filter_plugins'}",
           "ANSIBLE_CACHE_PLUGIN": "memory"}
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp / "inventory.yml"), str(tmp / "play.yml"),
                           "-e", f"@{tmp / 'extra.yml'}"], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
