"""Every producer of an Ansible inventory writes the shape of llmrack.contracts.inventory, and the example rack
inventories have it: the groups, the host variables, the deployment file the roles and the validation suite read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from infra.components.inventory import inventory_document
from llmrack.contracts import inventory as contract
from llmrack.errors import UsageError
from llmrack.lab import inventory as lab_inventory
from llmrack.lab import serving_artifacts
from llmrack.lab.state import LabState, NodeState, Profile
from llmrack.spec import parse_spec
from llmrack.stack_inventory import write_inventory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "ansible" / "inventories" / "examples").glob("*/hosts.yml"))


def _deployment() -> dict[str, object]:
    return serving_artifacts.deployment(None)


def test_pulumi_fleet_inventory_through_from_stack(tmp_path: Path) -> None:
    doc = inventory_document([("gpu-0", "10.0.0.5", "ubuntu", 22), ("gpu-1", "10.0.0.6", "ubuntu", 22)],
                             "nvidia", 8, 8000, _deployment())
    written = write_inventory({"inventory": doc}, tmp_path, "stack.json")
    assert written == [tmp_path / contract.HOSTS_FILE, tmp_path / contract.DEPLOYMENT_FILE]
    hosts = yaml.safe_load(written[0].read_text())
    groups = contract.serving_hosts(hosts)
    assert set(groups[contract.NVIDIA_GROUP]) == {"gpu-0", "gpu-1"}
    assert not groups[contract.ASCEND_GROUP] and not groups[contract.CPU_GROUP]
    node = groups[contract.NVIDIA_GROUP]["gpu-0"]
    assert node[contract.SERVING_URL_VAR] == "http://10.0.0.5:8000" and node[contract.ACCELERATOR_COUNT_VAR] == 8
    assert set(hosts["all"]["children"][contract.MONITORING_GROUP]["hosts"]) == {"gpu-0"}
    deployment = yaml.safe_load(written[1].read_text())[contract.DEPLOYMENT_VAR]
    assert parse_spec(deployment, "deployment.yml").name == "lab"


def test_lab_inventory(tmp_path: Path) -> None:
    state = LabState(lab_dir=tmp_path, prefix="llmrack-lab-test", network="n", image="i", nodes=[
        NodeState(name="node1", container="c1", profile=Profile.sim_ascend, ssh_port=2201, http_port=8001,
                  monitoring=True),
        NodeState(name="node2", container="c2", profile=Profile.sim_a100, ssh_port=2202, http_port=8002),
    ])
    lab_inventory.write_inventory(state, _deployment(), None)
    hosts = yaml.safe_load(state.inventory.read_text())
    groups = contract.serving_hosts(hosts)
    assert set(groups[contract.ASCEND_GROUP]) == {"node1"} and set(groups[contract.NVIDIA_GROUP]) == {"node2"}
    node2 = groups[contract.NVIDIA_GROUP]["node2"]
    assert node2[contract.ACCELERATOR_VAR] == "a100-80g" and node2[contract.SERVING_DEVICE_VAR] == "cpu"
    assert node2[contract.SERVING_URL_VAR] == "http://127.0.0.1:8002"
    assert node2[contract.LAB_PROFILE_VAR] == "sim-a100"
    assert set(hosts["all"]["children"][contract.MONITORING_GROUP]["hosts"]) == {"node1"}
    deployment = yaml.safe_load((state.inventory.parent / contract.DEPLOYMENT_FILE).read_text())
    assert parse_spec(deployment[contract.DEPLOYMENT_VAR], "lab").environment.value == "lab"


@pytest.mark.parametrize("hosts_file", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_rack_inventories_have_the_shape(hosts_file: Path) -> None:
    hosts = yaml.safe_load(hosts_file.read_text())
    groups = contract.serving_hosts(hosts)
    assert any(groups.values()), f"{hosts_file}: no host under {contract.SERVING_GROUP} / {contract.NODE_GROUPS}"
    children = hosts["all"]["children"]
    assert set(children[contract.SERVING_GROUP]["children"]) <= set(contract.NODE_GROUPS)
    assert (hosts_file.parent / contract.DEPLOYMENT_FILE).is_file()


def test_hosts_document_refuses_an_unknown_group() -> None:
    with pytest.raises(ValueError, match="not a node group: gpu_nodes"):
        contract.hosts_document({"gpu_nodes": {}}, [])
    doc = contract.hosts_document({}, [])
    assert json.loads(json.dumps(doc)) == doc and not any(contract.serving_hosts(doc).values())


def _r1_deployment() -> dict[str, object]:
    return {"name": "r1", "environment": "prod", "accelerator": "h200", "nodes": 4,
            "model": {"name": "deepseek-r1", "source": "/m"},
            "serving": {"max_model_len": 8192, "max_num_seqs": 16, "replicas": 2}}


def test_fleets_write_replicas_of_the_plans_nodes_with_ranks(tmp_path: Path) -> None:
    # bf16 R1 on H200: TP 8 x PP 2, a replica is 2 nodes; 4 nodes make 2 replicas, leaders first.
    rows = [(f"gpu-{i}", f"10.0.0.{i + 5}", "ubuntu", 22) for i in range(4)]
    doc = inventory_document(rows, "nvidia", 8, 8000, _r1_deployment())
    written = write_inventory({"inventory": doc}, tmp_path, "stack.json")
    hosts = contract.serving_hosts(yaml.safe_load(written[0].read_text()))[contract.NVIDIA_GROUP]
    assert contract.replicas(hosts) == {"gpu-0": ["gpu-0", "gpu-1"], "gpu-2": ["gpu-2", "gpu-3"]}
    member = contract.replica_member("gpu-3", hosts)
    assert (member["rank"], member["leader"], member["leader_address"], member["address"]) == (
        1, "gpu-2", "10.0.0.7", "10.0.0.8")


def test_from_stack_gives_an_older_stack_its_replicas_and_refuses_wrong_ones(tmp_path: Path) -> None:
    hosts = contract.hosts_document({contract.NVIDIA_GROUP: {"a": {}, "b": {}}}, ["a"])
    write_inventory({"inventory": {"hosts": hosts, "deployment": _r1_deployment()}}, tmp_path, "old.json")
    written = contract.serving_hosts(yaml.safe_load((tmp_path / contract.HOSTS_FILE).read_text()))
    assert contract.replicas(written[contract.NVIDIA_GROUP]) == {"a": ["a", "b"]}
    odd = contract.hosts_document({contract.NVIDIA_GROUP: {"a": {}, "b": {}, "c": {}}}, ["a"])
    with pytest.raises(UsageError, match=r"3 serving nodes do not make whole replicas of 2 nodes"):
        write_inventory({"inventory": {"hosts": odd, "deployment": _r1_deployment()}}, tmp_path, "odd.json")
    lonely = contract.hosts_document({contract.NVIDIA_GROUP: {
        "a": {contract.REPLICA_VAR: "r", contract.REPLICA_RANK_VAR: 0},
        "b": {contract.REPLICA_VAR: "s", contract.REPLICA_RANK_VAR: 0}}}, ["a"])
    with pytest.raises(UsageError, match=r"the plan's replica is 2 node\(s\), and replicas r \(1\), s \(1\) are not"):
        write_inventory({"inventory": {"hosts": lonely, "deployment": _r1_deployment()}}, tmp_path, "x.json")


def test_replica_ranks_must_be_whole_and_distinct() -> None:
    with pytest.raises(contract.InventoryError, match=r"hosts a and b both have llmrack_replica_rank 0 in replica r"):
        contract.replicas({"a": {contract.REPLICA_VAR: "r"}, "b": {contract.REPLICA_VAR: "r"}})
    with pytest.raises(contract.InventoryError, match=r"replica r has ranks \[0, 2\]"):
        contract.replicas({"a": {contract.REPLICA_VAR: "r"}, "b": {contract.REPLICA_VAR: "r",
                                                                  contract.REPLICA_RANK_VAR: 2}})
    with pytest.raises(contract.InventoryError, match=r"host a: llmrack_replica_rank must be a whole number"):
        contract.replicas({"a": {contract.REPLICA_RANK_VAR: "leader"}})
    assert contract.replicas({"a": {}, "b": {}}) == {"a": ["a"], "b": ["b"]}  # one-node replicas by default
