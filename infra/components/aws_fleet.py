"""AWS GPU fleet: a cluster placement group, a launch template with EFA, and the instances."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components._args import CloudFleetArgs, check
from infra.components.inventory import InventoryHost, inventory_output
from infra.instance_types import AWS_INSTANCE_TYPES


@dataclass(kw_only=True)
class AwsFleetArgs(CloudFleetArgs):
    instance_type: str
    ami: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    key_name: pulumi.Input[str] | None = None
    availability_zone: pulumi.Input[str] | None = None
    root_volume_gib: int = 500
    ssh_user: str = "ubuntu"

    def validate(self) -> None:
        check(self.instance_type in AWS_INSTANCE_TYPES, "AwsFleetArgs.instance_type", self.instance_type,
              f"must be one of {', '.join(AWS_INSTANCE_TYPES)}")
        if self.instance_type in AWS_INSTANCE_TYPES:
            sold = AWS_INSTANCE_TYPES[self.instance_type].accelerators
            check(sold == self.devices_per_node, "AwsFleetArgs.devices_per_node", self.devices_per_node,
                  f"{self.instance_type} carries {sold} accelerators (infra/instance_types.py); the catalog disagrees")
        self.check_count()
        check(self.root_volume_gib >= 50, "AwsFleetArgs.root_volume_gib", self.root_volume_gib, "must be >= 50")


class AwsFleet(pulumi.ComponentResource):
    inventory: pulumi.Output[dict[str, Any]]
    private_ips: pulumi.Output[list[str]]

    def __init__(self, name: str, args: AwsFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("llmrack:aws_fleet:AwsFleet", name, None, opts)
        itype = AWS_INSTANCE_TYPES[args.instance_type]
        tags = {"llmrack:fleet": name, "llmrack:accelerator": itype.accelerator, **args.tags}

        # A provider per fleet: the region is the stack's choice, not whatever the operator's shell has.
        provider = aws.Provider(f"{name}-provider", region=args.region, opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=provider)

        # `cluster` packs the instances on one network spine: NCCL all-reduce across nodes needs the
        # low latency and full bisection bandwidth that only a cluster placement group promises.
        group = aws.ec2.PlacementGroup(f"{name}-placement", strategy="cluster", tags=tags, opts=child)

        if itype.efa_interfaces:
            # One EFA per network card: card 0 carries the primary interface (device 0), every other card
            # a secondary (device 1), as the EFA guide for multi-card instances (p4d/p5) requires.
            interfaces = [
                aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                    network_card_index=card,
                    device_index=0 if card == 0 else 1,
                    interface_type="efa",
                    subnet_id=args.subnet_id,
                    security_groups=args.security_group_ids,
                    delete_on_termination="true",
                )
                for card in range(itype.efa_interfaces)
            ]
        else:
            interfaces = [
                aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                    device_index=0, subnet_id=args.subnet_id, security_groups=args.security_group_ids,
                    delete_on_termination="true",
                )
            ]
        template = aws.ec2.LaunchTemplate(
            f"{name}-template",
            image_id=args.ami,
            instance_type=args.instance_type,
            key_name=args.key_name,
            network_interfaces=interfaces,
            placement=aws.ec2.LaunchTemplatePlacementArgs(group_name=group.name),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/sda1",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=args.root_volume_gib, volume_type="gp3", delete_on_termination="true",
                        encrypted="true",
                    ),
                )
            ],
            # IMDSv2 only: a pod that reaches the metadata endpoint must not read instance credentials with a GET.
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1,
            ),
            tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="instance", tags=tags)],
            tags=tags,
            opts=child,
        )
        hosts: list[InventoryHost] = []
        instances = []
        for index in range(args.count):
            node = f"{name}-node-{index}"
            instance = aws.ec2.Instance(
                node,
                launch_template=aws.ec2.InstanceLaunchTemplateArgs(
                    id=template.id, version=template.latest_version.apply(str)
                ),
                placement_group=group.id,
                availability_zone=args.availability_zone,
                tags={**tags, "Name": node},
                opts=child,
            )
            instances.append(instance)
            hosts.append(InventoryHost(node, instance.private_ip, args.ssh_user))

        self.private_ips = pulumi.Output.all(*[i.private_ip for i in instances]).apply(list)
        self.inventory = inventory_output(
            hosts, "nvidia", args.devices_per_node, args.serving_port, args.deployment
        )
        self.register_outputs({
            "inventory": self.inventory,
            "privateIps": self.private_ips,
            "placementGroup": group.name,
            "launchTemplate": template.id,
        })
