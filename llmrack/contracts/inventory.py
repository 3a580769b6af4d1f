"""The Ansible inventory shape every producer writes and every consumer reads.

Producers: the Pulumi fleets (infra/components/inventory.py, exported as the stack output `inventory`),
`llmrack inventory from-stack` (llmrack/stack_inventory.py) and the lab (llmrack/lab/inventory.py). Consumers:
the playbooks and roles under ansible/, and the validation suite (llmrack/validation/expect.py).

Groups (hosts.yml)::

    all:
      vars: {...}                     connection settings shared by every host (optional)
      children:
        serving_nodes:                every node that serves; it has exactly these three children
          children:
            nvidia_nodes: {hosts: {NAME: HOSTVARS}}
            ascend_nodes: {hosts: {NAME: HOSTVARS}}
            cpu_nodes:    {hosts: {NAME: HOSTVARS}}
        monitoring: {hosts: {NAME: {}}}   where the Ansible monitoring role runs Prometheus
        gateway: {hosts: {NAME: {}}}      where the gateway role runs HAProxy, the rack's one endpoint (optional)

A node's group is its kind: the NVIDIA, Ascend or CPU roles and checks apply by group membership.

Replicas: the unit of serving is a replica of the plan's nodes_per_replica nodes (one leader, rank 0, and
headless workers). Producers give every node of a multi-node replica the same llmrack_replica and ranks 0..N-1
(`assign_replicas`) and list a replica's nodes one after another, leader first; consumers read them with
`replicas` / `replica_member` (the serving role's command, the gateway's backends = leaders, rollouts by
replica, validation per replica). A node without llmrack_replica is a one-node replica.

Host variables llmrack sets or reads (group_vars/all/deployment.yml holds the spec for every host):

    llmrack_deployment          the deployment spec mapping (parsed by llmrack.spec.parse_spec everywhere)
    llmrack_accelerator         catalog accelerator of the node (default: the spec's `accelerator`)
    llmrack_accelerator_count   devices the node should have (default: the catalog's devices_per_node)
    llmrack_serving_url         the node's serving endpoint as reachable from the control machine
    llmrack_lab_profile         the lab only: what the node simulates (cpu, sim-a100, sim-ascend)
    serving_device              the serving role's device (cpu, cuda, npu); the lab serves on cpu
    llmrack_replica             the replica the node belongs to (default: a replica of its own, named after it)
    llmrack_replica_rank        the node's rank in it: 0 is the leader (serves HTTP, the gateway's backend),
                                1..N-1 are headless workers (default 0)
    llmrack_node_address        the node's address on the data network (the collectives, the leader's address)
    llmrack_node_interface      the data network's interface on the node (GLOO/NCCL/HCCL socket interface)
    serving_api_keys            API keys (a Vault value in group_vars/all/vault.yml)
    llmrack_monitoring_user     who reads Prometheus and HAProxy's stats page (default llmrack)
    llmrack_monitoring_password its password (Vault); set: both ask for credentials
    ansible_host, ansible_port, ansible_user   how Ansible reaches the node
"""

from __future__ import annotations

from typing import Any

SERVING_GROUP = "serving_nodes"
MONITORING_GROUP = "monitoring"
GATEWAY_GROUP = "gateway"
BATCH_GROUP = "batch"  # hosts of the batch service (site.yml's batch play); opt-in, usually the gateway hosts
CANARY_GROUP = "serving_canary"  # hosts of a canary release: variant="canary" on their serving series
NVIDIA_GROUP = "nvidia_nodes"
ASCEND_GROUP = "ascend_nodes"
CPU_GROUP = "cpu_nodes"
# The children of SERVING_GROUP, one per node kind.
NODE_GROUPS = (NVIDIA_GROUP, ASCEND_GROUP, CPU_GROUP)
# Catalog vendor (llmrack.catalog.Vendor values, plus "cpu") -> the group its nodes join.
VENDOR_GROUPS = {"nvidia": NVIDIA_GROUP, "huawei": ASCEND_GROUP, "cpu": CPU_GROUP}

DEPLOYMENT_VAR = "llmrack_deployment"
ACCELERATOR_VAR = "llmrack_accelerator"
ACCELERATOR_COUNT_VAR = "llmrack_accelerator_count"
SERVING_URL_VAR = "llmrack_serving_url"
LAB_PROFILE_VAR = "llmrack_lab_profile"
SERVING_DEVICE_VAR = "serving_device"
API_KEYS_VAR = "serving_api_keys"
REPLICA_VAR = "llmrack_replica"
REPLICA_RANK_VAR = "llmrack_replica_rank"
NODE_ADDRESS_VAR = "llmrack_node_address"
NODE_INTERFACE_VAR = "llmrack_node_interface"
# Networks (CIDRs) operators come from: the firewall role lets them reach SSH and what they use, and closes
# every node to everyone else only when this is set (a firewall without it would lock operators out).
ADMIN_NETWORKS_VAR = "llmrack_admin_networks"
# Path on the controller of the key store `llmrack keys` writes (hashes of tenants' keys): llmrack's engine on
# every node and the gateway read it; playbooks/keys.yml distributes a change without a restart.
KEYS_STORE_VAR = "llmrack_keys_store"
# Operators' credentials for Prometheus' UI and API and HAProxy's stats page: the user and its password (Vault).
# The monitoring and gateway roles keep only a bcrypt hash on the nodes; readers on the controller (llmrack usage,
# canary, drift) take them from LLMRACK_PROMETHEUS_USER / LLMRACK_PROMETHEUS_PASSWORD (llmrack.observe.prometheus).
# No password: neither asks for credentials.
MONITORING_USER_VAR = "llmrack_monitoring_user"
MONITORING_PASSWORD_VAR = "llmrack_monitoring_password"
MONITORING_USER_DEFAULT = "llmrack"

# Files `inventory from-stack` and the lab write next to hosts.yml.
HOSTS_FILE = "hosts.yml"
DEPLOYMENT_FILE = "group_vars/all/deployment.yml"


def hosts_document(
    groups: dict[str, dict[str, dict[str, Any]]], monitoring: list[str], all_vars: dict[str, Any] | None = None,
    gateway: list[str] | None = None,
) -> dict[str, Any]:
    """hosts.yml's mapping: `groups` maps a NODE_GROUPS name to {host: host vars}; missing groups are empty."""
    unknown = sorted(set(groups) - set(NODE_GROUPS))
    if unknown:
        raise ValueError(f"not a node group: {', '.join(unknown)} (groups: {', '.join(NODE_GROUPS)})")
    children = {g: {"hosts": dict(groups.get(g, {}))} for g in NODE_GROUPS}
    top: dict[str, Any] = {}
    if all_vars:
        top["vars"] = all_vars
    top["children"] = {
        SERVING_GROUP: {"children": children},
        MONITORING_GROUP: {"hosts": {name: {} for name in monitoring}},
    }
    if gateway:
        top["children"][GATEWAY_GROUP] = {"hosts": {name: {} for name in gateway}}
    return {"all": top}


def serving_hosts(hosts: Any) -> dict[str, dict[str, Any]]:
    """{node group: {host: vars}} of a hosts.yml mapping; a level that is absent or not a mapping reads as empty."""
    serving = _dig(hosts, "all", "children", SERVING_GROUP, "children")
    return {g: _dig(serving, g, "hosts") for g in NODE_GROUPS}


def _dig(data: Any, *keys: str) -> dict[str, Any]:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


class InventoryError(ValueError):
    """An inventory whose replicas do not add up; the message names the host, the variable and the fix."""


def assign_replicas(hosts: list[str], nodes_per_replica: int) -> dict[str, dict[str, Any]]:
    """{host: {llmrack_replica, llmrack_replica_rank}} for `hosts` in order, `nodes_per_replica` at a time; a
    replica is named after its leader. One-node replicas get no variables (the default reads the same)."""
    if nodes_per_replica < 1:
        raise InventoryError(f"nodes per replica must be at least 1, got {nodes_per_replica}")
    if len(hosts) % nodes_per_replica:
        raise InventoryError(
            f"{len(hosts)} serving nodes do not make whole replicas of {nodes_per_replica} nodes (the plan's "
            f"nodes_per_replica): provision a multiple of {nodes_per_replica} nodes, or change the layout "
            "(serving.pipeline_parallel / serving.tensor_parallel)"
        )
    if nodes_per_replica == 1:
        return {h: {} for h in hosts}
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(hosts), nodes_per_replica):
        members = hosts[start:start + nodes_per_replica]
        for rank, host in enumerate(members):
            out[host] = {REPLICA_VAR: members[0], REPLICA_RANK_VAR: rank}
    return out


def replicas(hostvars: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """{replica: [host of rank 0, rank 1, ...]} of serving hosts' variables; InventoryError if ranks do not add up."""
    ranks: dict[str, dict[int, str]] = {}
    for host, hv in hostvars.items():
        name = str(hv.get(REPLICA_VAR) or host)
        raw = hv.get(REPLICA_RANK_VAR, 0)
        if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit():
            raise InventoryError(f"host {host}: {REPLICA_RANK_VAR} must be a whole number from 0, got {raw!r}")
        rank = int(raw)
        seen = ranks.setdefault(name, {})
        if rank in seen:
            raise InventoryError(
                f"hosts {seen[rank]} and {host} both have {REPLICA_RANK_VAR} {rank} in replica {name}: give each "
                "node of a replica its own rank"
            )
        seen[rank] = host
    out = {}
    for name, by_rank in sorted(ranks.items()):
        if sorted(by_rank) != list(range(len(by_rank))):
            raise InventoryError(
                f"replica {name} has ranks {sorted(by_rank)}: its nodes need {REPLICA_RANK_VAR} 0 to "
                f"{len(by_rank) - 1}, one each (0 is the leader)"
            )
        out[name] = [by_rank[r] for r in range(len(by_rank))]
    return out


def replica_member(host: str, hostvars: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the serving command needs of `host`'s replica: nodes, rank, leader, leader_address, address,
    interface, members (by rank)."""
    name = str(hostvars[host].get(REPLICA_VAR) or host)
    members = replicas({h: hv for h, hv in hostvars.items() if str(hv.get(REPLICA_VAR) or h) == name})[name]
    leader = members[0]
    return {
        "replica": name,
        "nodes": len(members),
        "rank": members.index(host),
        "leader": leader,
        "members": members,
        "leader_address": hostvars[leader].get(NODE_ADDRESS_VAR),
        "address": hostvars[host].get(NODE_ADDRESS_VAR),
        "interface": hostvars[host].get(NODE_INTERFACE_VAR),
    }
