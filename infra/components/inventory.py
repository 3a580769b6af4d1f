"""The Ansible inventory every fleet exports (its shape: llmrack.contracts.inventory).

A fleet's hosts become `serving_nodes` children by vendor (nvidia_nodes, ascend_nodes, cpu_nodes);
the first host also joins `monitoring`, which the Ansible monitoring role needs on a fleet without
a separate monitoring machine. Hosts are grouped into replicas of the plan's nodes_per_replica, in the order
the fleet lists them (llmrack.contracts.inventory.assign_replicas), each with its address as its data-network
address. `llmrack inventory from-stack` writes it to `hosts.yml` and `group_vars/all/deployment.yml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from llmrack.contracts.inventory import (
    ACCELERATOR_COUNT_VAR,
    NODE_ADDRESS_VAR,
    SERVING_URL_VAR,
    VENDOR_GROUPS,
    assign_replicas,
    hosts_document,
)
from llmrack.stack_inventory import nodes_per_replica


@dataclass(frozen=True)
class InventoryHost:
    name: str
    address: pulumi.Input[str]
    ssh_user: str
    ssh_port: int = 22


def inventory_document(
    hosts: list[tuple[str, str, str, int]], vendor: str, devices_per_node: int, serving_port: int,
    deployment: dict[str, Any],
) -> dict[str, Any]:
    """hosts: (name, address, ssh user, ssh port) with resolved addresses."""
    group = VENDOR_GROUPS[vendor]
    replicas = assign_replicas([h[0] for h in hosts], nodes_per_replica(deployment, "llmrack:deployment"))
    host_vars = {
        name: {
            "ansible_host": address,
            "ansible_user": user,
            "ansible_port": port,
            SERVING_URL_VAR: f"http://{address}:{serving_port}",
            ACCELERATOR_COUNT_VAR: devices_per_node if vendor != "cpu" else 0,
            NODE_ADDRESS_VAR: address,
            **replicas[name],
        }
        for name, address, user, port in hosts
    }
    monitoring = [hosts[0][0]] if hosts else []
    return {"hosts": hosts_document({group: host_vars}, monitoring), "deployment": deployment}


def inventory_output(
    hosts: list[InventoryHost], vendor: str, devices_per_node: int, serving_port: int, deployment: dict[str, Any],
) -> pulumi.Output[dict[str, Any]]:
    """The inventory once the cloud has assigned every address."""
    addresses = [pulumi.Output.from_input(h.address) for h in hosts]

    def build(resolved: list[str]) -> dict[str, Any]:
        rows = [(h.name, addr, h.ssh_user, h.ssh_port) for h, addr in zip(hosts, resolved, strict=True)]
        return inventory_document(rows, vendor, devices_per_node, serving_port, deployment)

    return pulumi.Output.all(*addresses).apply(lambda resolved: build(list(resolved)))
