"""Huawei Cloud Ascend fleet: ECS instances of an Ascend flavor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_huaweicloud as huaweicloud

from infra.components._args import CloudFleetArgs, check
from infra.components.inventory import InventoryHost, inventory_output


@dataclass(kw_only=True)
class HuaweiCloudFleetArgs(CloudFleetArgs):
    flavor: str
    image_id: pulumi.Input[str]
    network_id: pulumi.Input[str]
    availability_zone: pulumi.Input[str]
    key_pair: pulumi.Input[str] | None = None
    system_disk_gib: int = 200
    ssh_user: str = "root"

    def validate(self) -> None:
        check(bool(self.flavor.strip()), "HuaweiCloudFleetArgs.flavor", self.flavor, "must name an Ascend flavor")
        self.check_count()
        check(40 <= self.system_disk_gib <= 1024, "HuaweiCloudFleetArgs.system_disk_gib", self.system_disk_gib,
              "must be between 40 and 1024 GiB")


class HuaweiCloudFleet(pulumi.ComponentResource):
    inventory: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, args: HuaweiCloudFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("llmrack:huaweicloud_fleet:HuaweiCloudFleet", name, None, opts)
        tags = {"llmrack-fleet": name, **args.tags}
        # The region is the stack's, not the operator's environment's (HW_REGION_NAME).
        provider = huaweicloud.Provider(
            f"{name}-provider", region=args.region, opts=pulumi.ResourceOptions(parent=self)
        )
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        hosts: list[InventoryHost] = []
        for index in range(args.count):
            node = f"{name}-node-{index}"
            instance = huaweicloud.ecs.Instance(
                node,
                name=node,
                flavor_id=args.flavor,
                image_id=args.image_id,
                availability_zone=args.availability_zone,
                networks=[huaweicloud.ecs.InstanceNetworkArgs(uuid=args.network_id)],
                security_group_ids=args.security_group_ids,
                key_pair=args.key_pair,
                system_disk_type="SSD",
                system_disk_size=args.system_disk_gib,
                tags=tags,
                # The weights and CANN caches live on the system disk of a rebuilt node only until the
                # node is replaced; deleting the disk with the instance avoids paying for orphans.
                delete_disks_on_termination=True,
                opts=child,
            )
            hosts.append(InventoryHost(node, instance.access_ip_v4, args.ssh_user))
        self.inventory = inventory_output(hosts, "huawei", args.devices_per_node, args.serving_port, args.deployment)
        self.register_outputs({"inventory": self.inventory})
