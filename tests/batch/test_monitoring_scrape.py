"""Prometheus scrapes the batch service: the monitoring role's config, rendered by Ansible from its own template and
defaults for an inventory with a batch group, has a `batch` job on each batch host's port (promtool checks it where
installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "monitoring"
BIN = Path(sys.executable).parent

PLAY = """
- name: Render Prometheus' config
  hosts: m1
  gather_facts: false
  vars_files: ["{role}/defaults/main.yml"]
  tasks:
    - name: Config
      ansible.builtin.template:
        src: "{role}/templates/prometheus.yml.j2"
        dest: "{{{{ out }}}}/prometheus.yml"
        mode: "0644"
"""


def test_the_batch_hosts_are_scraped_on_their_port(tmp_path: Path) -> None:
    (tmp_path / "play.yml").write_text(PLAY.format(role=ROLE))
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump({"all": {"children": {
        "monitoring": {"hosts": {"m1": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}},
        "serving_nodes": {"hosts": {"n1": {}}},
        "batch": {"hosts": {"gw1": {"batch_port": 8111, "monitoring_scrape_address": "10.0.0.5"}, "gw2": {}}}}}}))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
                           "-e", f"out={tmp_path}", "-e", "ansible_managed=test", str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [(t["targets"], t["labels"]["node"]) for t in jobs["batch"]["static_configs"]]
    assert targets == [(["10.0.0.5:8111"], "gw1"), (["gw2:8100"], "gw2")]
    promtool = shutil.which("promtool")
    if promtool is None:  # Debian's prometheus package; the lab's Prometheus loads this config for real
        return
    checked = subprocess.run([promtool, "check", "config", "--syntax-only", str(tmp_path / "prometheus.yml")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
