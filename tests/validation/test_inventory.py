"""`llmrack validate --inventory`: several hosts read in parallel, --limit, and an unreachable node reported as
an error of that node (exit 1) while the others are still checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.validation.conftest import DEPLOYMENT, by_id, llmrack, report, write_inventory


@pytest.mark.slow
def test_inventory_hosts_limit_and_unreachable_node(tmp_path: Path) -> None:
    hosts = {"web1": {"ansible_connection": "local"}, "web2": {"ansible_connection": "local"},
             # Nothing listens on port 1 of the loopback address: ssh fails at once.
             "gone": {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_user": "root",
                      "ansible_ssh_common_args": "-o ConnectTimeout=5 -o BatchMode=yes"}}
    inv = write_inventory(tmp_path / "inv", hosts, {"cpu_nodes": ["web1", "web2", "gone"]}, DEPLOYMENT,
                          {"common_sysctl": {}})
    out = tmp_path / "all"
    proc = llmrack("validate", "--inventory", str(inv), "--report", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rep = report(out)
    assert set(rep["nodes"]) == {"web1", "web2", "gone"}
    checks = by_id(rep)
    gone = [c for c in rep["checks"] if c["node"] == "gone"]
    assert gone and {c["status"] for c in gone} == {"error"}
    assert "cannot reach the node" in checks["os.services[gone]"]["detail"]
    assert "gather_error" in rep["nodes"]["gone"]
    # The reachable nodes were checked all the same, with measured values.
    assert checks["os.nouveau_absent[web1]"]["status"] != "error"
    assert checks["os.nouveau_absent[web2]"]["measured"] in ("loaded", "not loaded")

    limited = tmp_path / "limited"
    llmrack("validate", "--inventory", str(inv), "--limit", "web1,web2", "--report", str(limited))
    assert set(report(limited)["nodes"]) == {"web1", "web2"}
    group = tmp_path / "group"
    proc = llmrack("validate", "--inventory", str(inv), "--limit", "nothing_matches", "--report", str(group))
    assert proc.returncode == 2 and "no host matches" in proc.stderr + proc.stdout
