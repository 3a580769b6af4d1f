"""The replica all-reduce measurement with real torch.distributed (gloo over TCP): two processes as two ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra  # type: ignore[import-untyped]

from llmrack.validation import replica
from llmrack.validation.checks.serving import serving_allreduce
from llmrack.validation.evidence import Evidence, ServingImageProbe
from tests.unit.validation.conftest import expectations

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "llmrack" / "validation" / "allreduce.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_ranks_sum_correctly_and_report_bus_bandwidth() -> None:
    master = f"127.0.0.1:{_free_port()}"
    # The source alone, through `python -c`: how it runs inside a serving image that has torch but not llmrack.
    code = SOURCE.read_text()
    procs = [subprocess.Popen([sys.executable, "-c", code, "--rank", str(r), "--world", "2", "--master", master,
                               "--sizes-mib", "1,4", "--iters", "2"], stdout=subprocess.PIPE, text=True)
             for r in (0, 1)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    result = json.loads(outs[0])
    assert outs[1] == "" and result["world"] == 2 and result["correct"] is True
    assert [row["bytes"] for row in result["sizes"]] == [1 << 20, 4 << 20]
    for row in result["sizes"]:
        # Ring all-reduce: each link carries 2(n-1)/n of the buffer; with n = 2 bus and algorithm bandwidth agree.
        assert row["busbw_gbps"] == row["algbw_gbps"] > 0
    assert result["busbw_gbps"] == result["sizes"][-1]["busbw_gbps"]


CTR = """#!/bin/bash
# containerd's ctr, as far as the replica all-reduce uses it: `containers info` names the serving container's
# image; `run ... IMAGE ID CMD...` runs CMD (here, on this host, with this interpreter as the image's python3).
if [ "$3" = containers ]; then echo '    "Image": "registry.example/serving@sha256:abc",'; exit 0; fi
while [ "$1" != "registry.example/serving@sha256:abc" ]; do shift; done
shift 2
exec "$@"
"""


def test_validate_runs_the_all_reduce_on_every_node_of_a_replica(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """llmrack.validation.replica: the command each node runs (the source handed to the image's python3 through
    `ctr run`), all ranks at once, rank 0's result as the leader's item, judged by serving.allreduce."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ctr").write_text(CTR)
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    for tool in ("ctr", "python3"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(replica, "PORT", _free_port())
    host = testinfra.get_host("local://")
    hostvars = {"llmrack_replica": "node1", "llmrack_node_address": "127.0.0.1", "llmrack_node_interface": "lo"}
    members = [replica.Member(f"node{r + 1}", host, r, {**hostvars, "llmrack_replica_rank": r}, ServingImageProbe())
               for r in (1, 0)]
    groups = replica.replicas(members)
    assert [m.name for m in groups["node1"]] == ["node1", "node2"]
    got = replica.allreduce(groups["node1"])
    assert got.rc == 0, got.err
    leader = expectations("cpu", **hostvars)
    outcome = serving_allreduce(Evidence(host="node1", items={replica.ITEM: got}), leader)
    assert outcome.status == "pass" and outcome.unit == "GB/s" and float(outcome.measured) > 0, outcome
    assert "gloo across node1, node2 (world 2)" in outcome.detail
    worker = expectations("cpu", **hostvars, llmrack_replica_rank=1)
    assert serving_allreduce(Evidence(host="node2", items={}), worker).status == "skip"
