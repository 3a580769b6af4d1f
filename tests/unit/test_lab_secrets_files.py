"""The lab's monitoring password is on disk only owner-readable: in <lab dir>/monitoring-password and in state.json
(NodeState.prometheus_credentials, for the lab's own readers); the address the lab prints has no credentials."""

from __future__ import annotations

import stat
from pathlib import Path

from llmrack.lab import inventory
from llmrack.lab.state import LabState, NodeState, Profile, save, state_file


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_password_file_and_the_state_are_owner_only(tmp_path: Path) -> None:
    state = LabState(lab_dir=tmp_path / "lab", prefix="llmrack-lab-test", network="n", image="i")
    credentials = inventory.monitoring_credentials(state)
    assert _mode(inventory.monitoring_password_file(state.lab_dir)) == 0o600
    assert inventory.monitoring_credentials(state) == credentials  # made once, read back
    state.nodes.append(NodeState(name="node1", container="c", profile=Profile.cpu, ssh_port=1, http_port=2,
                                 prometheus_port=3, prometheus_credentials=credentials))
    save(state)
    assert _mode(state_file(state.lab_dir)) == 0o600
    save(state)  # a second save replaces it, still owner-only
    assert _mode(state_file(state.lab_dir)) == 0o600
    password = credentials.split(":", 1)[1]
    assert password in state_file(state.lab_dir).read_text()
    assert password not in str(state.nodes[0].prometheus_address)
