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

Host variables llmrack sets or reads (group_vars/all/deployment.yml holds the spec for every host):

    llmrack_deployment          the deployment spec mapping (parsed by llmrack.spec.parse_spec everywhere)
    llmrack_accelerator         catalog accelerator of the node (default: the spec's `accelerator`)
    llmrack_accelerator_count   devices the node should have (default: the catalog's devices_per_node)
    llmrack_serving_url         the node's serving endpoint as reachable from the control machine
    llmrack_lab_profile         the lab only: what the node simulates (cpu, sim-a100, sim-ascend)
    serving_device              the serving role's device (cpu, cuda, npu); the lab serves on cpu
    serving_api_keys            API keys (a Vault value in group_vars/all/vault.yml)
    ansible_host, ansible_port, ansible_user   how Ansible reaches the node
"""

from __future__ import annotations

from typing import Any

SERVING_GROUP = "serving_nodes"
MONITORING_GROUP = "monitoring"
GATEWAY_GROUP = "gateway"
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
