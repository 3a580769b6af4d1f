"""What `llmrack lab up/provision` says after a run: which nodes failed, which a stopped run never reached,
and the exact command that resumes. Recaps are parsed from ansible-playbook's own PLAY RECAP lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from llmrack.cli.lab_cmd import _report
from llmrack.lab.lab import UpResult
from llmrack.lab.runner import parse_recap
from llmrack.lab.state import LabState, NodeState, Profile


def _state(tmp_path: Path) -> LabState:
    nodes = [NodeState(name=f"node{i}", container=f"c{i}", profile=p, ssh_port=2200 + i, http_port=8000 + i)
             for i, p in ((1, Profile.sim_ascend), (2, Profile.sim_a100), (3, Profile.cpu))]
    return LabState(lab_dir=tmp_path, prefix="llmrack-lab-x", network="llmrack-lab-x", image="img", nodes=nodes)


def _recap(*lines: str) -> dict[str, dict[str, int]]:
    return parse_recap(["PLAY RECAP *********************************************************************", *lines])


def test_a_serial_run_that_stopped_names_failed_and_unreached_nodes_and_the_resume_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # upgrade-driver.yml (serial: 1, nvidia_nodes:ascend_nodes) failed on node2 first: node1 never ran.
    recap = _recap("node2                      : ok=10   changed=1    unreachable=0    failed=1    skipped=3")
    result = UpResult(_state(tmp_path), 2, recap, tmp_path / "logs" / "upgrade-driver.log")
    assert result.failed_hosts == ["node2"]
    assert result.unreached_hosts == ["node1", "node3"]
    with pytest.raises(typer.Exit) as exit_info:
        _report(result, "llmrack lab provision --playbook upgrade-driver.yml -e nvidia_driver_version=550.144.03")
    assert exit_info.value.exit_code == 1
    err = capsys.readouterr().err
    assert "failed: node2; not reached: node1, node3" in err
    assert "`llmrack lab provision --playbook upgrade-driver.yml -e nvidia_driver_version=550.144.03`" in err
    assert "upgrade-driver.log" in err


def test_a_successful_run_of_a_playbook_for_some_groups_reports_no_failure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The cpu node is not in upgrade-driver.yml's hosts: absent from the recap, and that is not a failure.
    recap = _recap("node1 : ok=40 changed=5 unreachable=0 failed=0 skipped=2",
                   "node2 : ok=44 changed=7 unreachable=0 failed=0 skipped=2")
    result = UpResult(_state(tmp_path), 0, recap, None)
    assert result.failed_hosts == [] and result.unreached_hosts == []
    _report(result, "llmrack lab provision --playbook upgrade-driver.yml")
    err = capsys.readouterr().err
    assert "node1: ok=40 changed=5" in err and "failed:" not in err
