"""The suite against lab nodes (`llmrack lab`): podman nodes reached over SSH through the inventory the lab
writes, read in parallel. The nodes are booted but NOT provisioned here (provisioning is the lab's own test), so
the suite must say exactly that: every node read, nothing unreachable, and the software the roles install
reported missing rather than passed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmrack.lab import lab
from llmrack.lab.state import Profile
from tests.validation.conftest import by_id, llmrack, report


@pytest.fixture(scope="module")
def booted_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: no lab nodes can boot here")
    lab_dir = tmp_path_factory.mktemp("lab")
    try:
        lab.up(lab_dir, 2, [Profile.cpu, Profile.sim_a100], provision=False, serving=False)
        yield lab_dir
    finally:
        lab.down(lab_dir)


@pytest.mark.lab
def test_quick_level_against_booted_lab_nodes(booted_lab: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = llmrack("validate", "--inventory", str(booted_lab / "inventory"), "--report", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rep = report(out)
    assert set(rep["nodes"]) == {"node1", "node2"}
    assert rep["nodes"]["node2"]["kind"] == "nvidia" and rep["nodes"]["node1"]["kind"] == "cpu"
    for name, info in rep["nodes"].items():
        assert "gather_error" not in info and name in info["uname"]  # read over SSH, each node itself
    checks = by_id(rep)
    # Booted, not provisioned: containerd and the GPU driver are not there, and the suite says so.
    assert checks["os.containerd_runtime[node1]"]["status"] == "fail"
    assert checks["nvidia.gpu_count[node2]"]["status"] == "fail"
    assert "nvidia-smi is not installed" in checks["nvidia.gpu_count[node2]"]["detail"]
    assert checks["os.nouveau_absent[node1]"]["status"] == "pass"
    assert not any("cannot reach" in c["detail"] for c in rep["checks"])
