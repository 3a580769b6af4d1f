"""Static fleet: bare-metal hosts listed in the stack config. Nothing to create; it exports their inventory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from infra.components._args import check
from infra.components.inventory import InventoryHost, inventory_output
from llmrack.contracts.inventory import VENDOR_GROUPS


@dataclass
class StaticFleetArgs:
    hosts: list[InventoryHost]
    vendor: str
    devices_per_node: int
    serving_port: int
    deployment: dict[str, Any]

    def validate(self) -> None:
        check(bool(self.hosts), "StaticFleetArgs.hosts", self.hosts, "list at least one host")
        names = [h.name for h in self.hosts]
        check(len(set(names)) == len(names), "StaticFleetArgs.hosts", names, "host names must be unique")
        check(self.vendor in VENDOR_GROUPS, "StaticFleetArgs.vendor", self.vendor,
              f"must be one of {', '.join(VENDOR_GROUPS)}")


class StaticFleet(pulumi.ComponentResource):
    inventory: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, args: StaticFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("llmrack:static_fleet:StaticFleet", name, None, opts)
        self.inventory = inventory_output(args.hosts, args.vendor, args.devices_per_node, args.serving_port,
                                          args.deployment)
        self.register_outputs({"inventory": self.inventory})
