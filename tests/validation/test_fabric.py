"""The fabric between a replica's nodes (llmrack.validation.fabric, judged by serving.fabric), run for real against
the lab's simulated tools: nccl-tests' all_reduce_perf through mpirun on sim-a100 nodes, hccn_tool's link, net
health and cross-node pings on sim-ascend nodes. Each simulated node is a tree laid out as the simulated
installers lay it out on a lab node (tests/validation/test_sim_tools.py), reached through testinfra's local
backend with the tree's LLMRACK_SIM_ROOT and PATH, so the commands validate runs are the ones a rack runs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import testinfra  # type: ignore[import-untyped]

from llmrack.validation import fabric
from llmrack.validation.checks import run
from llmrack.validation.checks.base import Outcome
from llmrack.validation.checks.serving import serving_fabric
from llmrack.validation.evidence import Evidence, ServingImageProbe
from llmrack.validation.replica import Member, replicas
from tests.unit.validation.conftest import expectations
from tests.validation.test_sim_tools import SIM, _install, env_for, hardware, install


class SimNode:
    """testinfra's local host with one simulated node's tools first on PATH."""

    def __init__(self, root: Path) -> None:
        self.host, self.env = testinfra.get_host("local://"), env_for(root)

    def run(self, command: str, *args: Any) -> Any:
        return self.host.run("env LLMRACK_SIM_ROOT=%s PATH=%s " + command, self.env["LLMRACK_SIM_ROOT"],
                             self.env["PATH"], *args)


def node(tmp_path: Path, name: str, hw: dict[str, Any], nccl: bool = True) -> SimNode:
    root = install(tmp_path / name, hw)
    if hw.get("gpus") and nccl:
        # The simulated nccl-tests build the lab's mirror carries, and a stand-in for Open MPI's mpirun that starts
        # rank 0 only, here where the "nodes" are trees of one host (the lab runs Debian's Open MPI over SSH).
        _install(SIM / "nccl-tests" / "payload" / "build" / "all_reduce_perf", root / "usr" / "bin" / "all_reduce_perf")
        _install(Path(__file__).parent / "fixtures" / "mpirun", root / "usr" / "bin" / "mpirun")
    return SimNode(root)


def replica(kind: str, nodes: list[SimNode], devices: int = 8) -> list[Member]:
    members = [Member(f"node{r + 1}", n, r, {"llmrack_replica": "node1", "llmrack_replica_rank": r,
                                             "llmrack_node_address": f"10.0.0.{r + 1}",
                                             "llmrack_node_interface": "eth1"}, ServingImageProbe(), kind, devices)
               for r, n in enumerate(nodes)]
    return replicas(members)["node1"]


def judged(kind: str, accelerator: str, members: list[Member], **pins: Any) -> Outcome:
    item = fabric.run(members)
    assert item is not None
    leader = expectations(kind, accelerator, **members[0].vars, **pins)
    return run(serving_fabric, Evidence(host="node1", items={fabric.ITEM: item}), leader)


# --- NVIDIA: nccl-tests ---------------------------------------------------------------------------------------
def test_nccl_tests_across_a_healthy_replica_pass_against_the_catalog_floor(tmp_path: Path) -> None:
    hw = hardware("sim-a100")
    members = replica("nvidia", [node(tmp_path, "n1", hw), node(tmp_path, "n2", hw)])
    command = fabric.nccl_command(members)
    assert "mpirun --allow-run-as-root -np 16 -H 10.0.0.1:8,10.0.0.2:8" in command
    assert "-x NCCL_SOCKET_IFNAME=eth1" in command and "-b 8M -e 1G" in command
    out = judged("nvidia", "a100-80g", members)
    assert out.status == "pass", out
    # 80 % of the catalog's 180 GB/s across nodes (2 x 8 A100 on 8 x HDR), its source named.
    assert out.threshold == ">= 144" and 180 < float(out.measured) < 188, out
    assert "16 ranks on 2 hosts" in out.detail and "HDR 200 Gb/s" in out.detail
    worker = expectations("nvidia", "a100-80g", **members[1].vars)
    assert run(serving_fabric, Evidence(host="node2", items={}), worker).status == "skip"


def test_nccl_tests_fail_on_low_bandwidth_on_corruption_and_on_an_unreachable_node(tmp_path: Path) -> None:
    healthy = hardware("sim-a100")
    slow = {**copy.deepcopy(healthy), "ib_hcas_down": ["mlx5_1", "mlx5_3"]}  # NCCL runs on half its rails
    out = judged("nvidia", "a100-80g", replica("nvidia", [node(tmp_path, "s1", slow), node(tmp_path, "s2", slow)]))
    assert out.status == "fail" and float(out.measured) < 100 and "slow or down link" in out.detail, out
    # A deployment's own floor (its fabric is not the reference's) wins over the catalog.
    pinned = judged("nvidia", "a100-80g", replica("nvidia", [node(tmp_path, "p1", slow), node(tmp_path, "p2", slow)]),
                    llmrack_validation_internode_gbps=80)
    assert pinned.status == "pass" and pinned.threshold == ">= 80", pinned

    corrupt = {**copy.deepcopy(healthy), "fabric_wrong_elements": 3}
    out = judged("nvidia", "a100-80g",
                 replica("nvidia", [node(tmp_path, "c1", corrupt), node(tmp_path, "c2", healthy)]))
    assert out.status == "fail" and out.measured.endswith("wrong elements") and "corrupts" in out.detail, out

    cut = {**copy.deepcopy(healthy), "unreachable_hosts": ["10.0.0.2"]}
    out = judged("nvidia", "a100-80g", replica("nvidia", [node(tmp_path, "u1", cut), node(tmp_path, "u2", healthy)]))
    assert out.status == "fail" and out.measured == "rc 1", out
    assert "ORTE was unable to reliably start" in out.detail and "10.0.0.2" in out.detail

    bare = judged("nvidia", "a100-80g", replica("nvidia", [node(tmp_path, "b1", healthy, nccl=False),
                                                           node(tmp_path, "b2", healthy, nccl=False)]))
    assert bare.status == "fail" and bare.measured == "rc 127" and "mpirun (Open MPI) is not installed" in bare.detail


# --- Ascend: hccn_tool ----------------------------------------------------------------------------------------
def ascend_board(node_index: int, **board: Any) -> dict[str, Any]:
    hw = copy.deepcopy(hardware("sim-ascend"))
    for npu in hw["npus"]:
        npu["ip"] = f"10.20.{node_index}.{20 + npu['id']}"
    return {**hw, **board}


def test_hccn_link_health_and_cross_node_pings_of_a_healthy_replica_pass(tmp_path: Path) -> None:
    members = replica("ascend", [node(tmp_path, "a1", ascend_board(1)), node(tmp_path, "a2", ascend_board(2))])
    out = judged("ascend", "ascend-910b", members)
    assert out.status == "pass" and out.measured == "16/16", out
    assert "every NPU's link UP and net health Success" in out.detail


def test_hccn_fails_on_a_down_port_an_unreachable_peer_and_shared_addresses(tmp_path: Path) -> None:
    down = ascend_board(1)
    down["npus"][3]["link_status"] = "DOWN"
    lost = ascend_board(2, unreachable_addresses=["10.20.1.25"])
    out = judged("ascend", "ascend-910b", replica("ascend", [node(tmp_path, "d1", down), node(tmp_path, "d2", lost)]))
    assert out.status == "fail", out
    assert "node1 NPU 3: link status DOWN" in out.detail and "node1 NPU 3: net health status Fault" in out.detail
    assert "node1 NPU 3 -> node2 NPU 3 (10.20.2.23): 3 sent, 0 received" in out.detail
    assert "node2 NPU 5 -> node1 NPU 5 (10.20.1.25): 3 sent, 0 received" in out.detail
    # The lab's sim boards give every node the same NPU addresses: HCCL could not tell the nodes' NPUs apart.
    same = judged("ascend", "ascend-910b", replica("ascend", [node(tmp_path, "s1", hardware("sim-ascend")),
                                                              node(tmp_path, "s2", hardware("sim-ascend"))]))
    assert same.status == "fail" and "node2 NPU 0 and node1 NPU 0 share the address 192.168.100.101" in same.detail
