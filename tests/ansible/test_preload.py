"""The controller imports llmrack's filters once per run (ansible/playbooks/callback_plugins/llmrack_preload.py),
not once per task and host: every filter_plugins folder of the tree is one it loads, and a playbook next to
filter_plugins/ finds llmrack imported in the main process before its first task (whose worker inherits it)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
PRELOAD = ANSIBLE / "playbooks" / "callback_plugins" / "llmrack_preload.py"


def test_every_filter_plugin_folder_is_preloaded() -> None:
    spec = importlib.util.spec_from_file_location("llmrack_preload", PRELOAD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folders = {p for p in ANSIBLE.rglob("filter_plugins") if p.is_dir()}
    assert folders and folders == set(module.filter_plugin_dirs())


def test_a_playbook_run_imports_llmrack_once_before_its_tasks(tmp_path: Path) -> None:
    # A playbook beside the repository's plugin folders, as ansible/playbooks/*.yml are.
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    for name in ("callback_plugins", "filter_plugins"):
        (playbooks / name).symlink_to(ANSIBLE / "playbooks" / name)
    playbook = playbooks / "check.yml"
    playbook.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                        "    - name: Check | The serving port through llmrack's filter\n"
                        "      ansible.builtin.debug:\n"
                        "        msg: \"{{ {'model': {'name': 'tiny'}} | llmrack_serving_port }}\"\n")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")}
    r = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-vvv", "-i", "localhost,", "-c",
                        "local", str(playbook)], env=env, capture_output=True, text=True, check=False, timeout=300)
    before_tasks = r.stdout.split("TASK [")[0]
    assert "llmrack filters preloaded: " in before_tasks and " llmrack.plan " in before_tasks, r.stdout[-3000:]
