"""The serving role's scan gate, run by ansible-playbook as a rollout runs it (tasks/gate.yml on the controller):
a digest whose scan failed stops the play naming the digest and the reason; a passed one goes on."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmrack.contracts.scan_results import ScanResult, ScanStatus
from llmrack.scan.gate import record_result

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLE = ROOT / "ansible" / "roles" / "serving"


def _run_gate(tmp_path: Path, digest: str, environment: str) -> subprocess.CompletedProcess[str]:
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local",
             "vars_files": [str(ROLE / "defaults" / "main.yml")],
             "tasks": [{"ansible.builtin.include_tasks": str(ROLE / "tasks" / "gate.yml")}]}]
    spec = yaml.safe_load((ROOT / "llmrack" / "lab" / "data" / "lab-spec.yaml").read_text())
    spec["environment"] = environment
    (tmp_path / "vars.json").write_text(json.dumps({
        "llmrack_deployment": spec, "serving_image_digest": digest,
        "serving_scan_results_dir": str(tmp_path / "scan-results"), "ansible_python_interpreter": sys.executable}))
    (tmp_path / "gate.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_FILTER_PLUGINS": str(ROOT / "ansible" / "playbooks" / "filter_plugins"),
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-e", f"@{tmp_path / 'vars.json'}",
                           str(tmp_path / "gate.yml")], cwd=ROOT / "ansible", env=env, capture_output=True,
                          text=True, check=False, timeout=300)


@pytest.mark.parametrize(("status", "environment", "passes"), [
    (ScanStatus.failed, "lab", False),  # a failed scan is refused everywhere
    (ScanStatus.unscanned, "prod", False),
    (ScanStatus.unscanned, "lab", True),  # the lab's spec lets an unscanned image run, loudly
    (ScanStatus.passed, "prod", True),
])
def test_gate_task_follows_the_scan_result(tmp_path: Path, status: ScanStatus, environment: str,
                                           passes: bool) -> None:
    digest = "sha256:" + "ab" * 32
    result = ScanResult(digest=digest, status=status, scanned_at=dt.datetime.now(dt.UTC), reason="test verdict")
    record_result(tmp_path / "scan-results", result)
    proc = _run_gate(tmp_path, digest, environment)
    assert (proc.returncode == 0) is passes, proc.stdout[-3000:]
    if not passes:
        assert f"scan gate refused {digest}" in proc.stdout, proc.stdout[-3000:]
