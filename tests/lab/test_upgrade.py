"""upgrade-driver.yml on the simulated boards: one node at a time, serving stopped, the newer driver (and on the
A100 node the Fabric Manager of the same version; on the 910B node the firmware first, then the driver) from the
mirror, serving back and ready. Runs last: it leaves the session lab on the newer versions."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from llmrack.lab import lab, sim
from llmrack.lab.state import Profile
from tests.lab.hosts import host_of, node_of

pytestmark = pytest.mark.lab


def test_upgrade_driver_moves_each_board_to_the_new_version_and_serves_again(lab_up: lab.UpResult) -> None:
    old, new = sim.versions(), sim.upgrade_versions()
    # Through the CLI, as docs/lab.md shows it.
    proc = subprocess.run(
        [sys.executable, "-m", "llmrack", "lab", "provision", "--lab-dir", str(lab_up.state.lab_dir),
         "--playbook", "upgrade-driver.yml", "-e", f"nvidia_driver_version={new['nvidia-driver']}",
         "-e", f"ascend_driver_version={new['ascend-driver']}",
         "-e", f"ascend_driver_firmware_version={new['ascend-firmware']}"],
        capture_output=True, text=True, check=False, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = dict(re.findall(r"^\s*(node\d+): ok=\d+ changed=(\d+) ", proc.stderr, re.M))
    assert set(changed) == {n.name for n in lab_up.state.nodes}, proc.stderr
    assert all(int(c) > 0 for c in changed.values()), proc.stderr

    gpu = host_of(lab_up, node_of(lab_up, Profile.sim_a100).name)
    drivers = gpu.check_output("nvidia-smi --query-gpu=driver_version --format=csv,noheader").splitlines()
    assert drivers == [new["nvidia-driver"]] * 8 and old["nvidia-driver"] not in drivers
    assert new["nvidia-fabricmanager"] in gpu.check_output("nv-fabricmanager --version")
    assert gpu.service("nvidia-fabricmanager").is_running

    npu = host_of(lab_up, node_of(lab_up, Profile.sim_ascend).name)
    board = npu.check_output("npu-smi info -t board -i 0")
    assert new["ascend-driver"] in board and new["ascend-firmware"] in board
    # An upgrade writes the firmware through the installed (old) driver first, then replaces the driver.
    installs = npu.file("/var/log/llmrack-sim/installs.log").content_string.splitlines()
    upgrades = [line.split()[:2] for line in installs
                if "--upgrade" in line and line.split()[0] in ("ascend-firmware", "ascend-driver")]
    assert upgrades == [["ascend-firmware", new["ascend-firmware"]], ["ascend-driver", new["ascend-driver"]]], installs

    for node in lab_up.state.nodes:
        assert httpx.get(f"{node.serving_url}/ready", timeout=10).status_code == 200, node.name
