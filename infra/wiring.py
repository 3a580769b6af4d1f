"""From the checked stack config to each component's Args: the one place config keys meet components.

Sizing comes from the plan (TP degree, replicas, nodes) and hardware facts from the catalog; nothing
is typed twice. `component_args(cfg)` builds every Args and validates all of them before the program
creates its first resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.components.accelerator_stack import AcceleratorStackArgs, scheduling
from infra.components.aws_fleet import AwsFleetArgs
from infra.components.huaweicloud_fleet import HuaweiCloudFleetArgs
from infra.components.inventory import InventoryHost
from infra.components.monitoring import MonitoringArgs
from infra.components.serving import LWS_LEADER_ADDRESS, MODELS_ROOT, ModelVolume, ServingArgs
from infra.components.static_fleet import StaticFleetArgs
from infra.config import AwsFleetConfig, HuaweiCloudFleetConfig, StackConfig, StaticFleetConfig
from infra.instance_types import AWS_DEFAULT_FOR_ACCELERATOR
from infra.rules import StackConfigError
from llmrack.contracts.serving_command import (
    NODE_KIND_OF_VENDOR,
    ReplicaMember,
    ServingCommand,
    ServingCommandError,
    ServingInputs,
    render,
)
from llmrack.contracts.serving_defaults import DRAIN_TIMEOUT_S


@dataclass
class ComponentArgs:
    fleet: AwsFleetArgs | HuaweiCloudFleetArgs | StaticFleetArgs | None
    accelerator_stack: AcceleratorStackArgs
    serving: ServingArgs
    monitoring: MonitoringArgs | None

    def validate(self) -> None:
        for args in (self.fleet, self.accelerator_stack, self.serving, self.monitoring):
            if args is not None:
                args.validate()


def _deployment_mapping(cfg: StackConfig) -> dict[str, Any]:
    # The inventory carries the spec as parsed, in its JSON form, for Ansible's parse_spec to read again.
    return cfg.spec.model_dump(mode="json", exclude_none=True)


def fleet_args(cfg: StackConfig) -> AwsFleetArgs | HuaweiCloudFleetArgs | StaticFleetArgs | None:
    fleet, acc = cfg.fleet, cfg.accelerator
    port = cfg.spec.serving.port
    deployment = _deployment_mapping(cfg)
    tags = {"llmrack:deployment": cfg.spec.name, "llmrack:environment": cfg.spec.environment.value}
    if isinstance(fleet, AwsFleetConfig):
        return AwsFleetArgs(
            region=fleet.region,
            instance_type=fleet.instance_type or AWS_DEFAULT_FOR_ACCELERATOR[acc.name],
            count=cfg.fleet_nodes,
            devices_per_node=acc.devices_per_node,
            ami=fleet.ami,
            subnet_id=fleet.subnet_id,
            security_group_ids=fleet.security_group_ids,
            serving_port=port,
            deployment=deployment,
            key_name=fleet.key_name,
            availability_zone=fleet.availability_zone,
            root_volume_gib=fleet.root_volume_gib,
            ssh_user=fleet.ssh_user,
            tags=tags,
        )
    if isinstance(fleet, HuaweiCloudFleetConfig):
        return HuaweiCloudFleetArgs(
            region=fleet.region,
            flavor=fleet.flavor,
            count=cfg.fleet_nodes,
            image_id=fleet.image_id,
            network_id=fleet.network_id,
            security_group_ids=fleet.security_group_ids,
            availability_zone=fleet.availability_zone,
            devices_per_node=acc.devices_per_node,
            serving_port=port,
            deployment=deployment,
            key_pair=fleet.key_pair,
            system_disk_gib=fleet.system_disk_gib,
            ssh_user=fleet.ssh_user,
            tags={k.replace(":", "-"): v for k, v in tags.items()},  # Huawei tag keys allow no ':'
        )
    if isinstance(fleet, StaticFleetConfig):
        return StaticFleetArgs(
            hosts=[InventoryHost(h.name, h.address, h.ssh_user or fleet.ssh_user, h.ssh_port)
                   for h in fleet.hosts],
            vendor=acc.vendor.value,
            devices_per_node=acc.devices_per_node,
            serving_port=port,
            deployment=deployment,
        )
    return None


def serving_command(cfg: StackConfig, model_dir: str, rank: int = 0) -> ServingCommand:
    """The pods' command from the one renderer the Ansible serving role uses too; of a replica of several nodes,
    the leader's (rank 0) or the workers' (rank 1: each worker pod's rank is its LeaderWorkerSet index)."""
    replica = ReplicaMember(nodes=cfg.plan.nodes_per_replica, rank=rank, leader_address=LWS_LEADER_ADDRESS)
    inputs = ServingInputs.from_spec(cfg.spec, cfg.plan, NODE_KIND_OF_VENDOR[cfg.accelerator.vendor.value],
                                     model_path=f"{MODELS_ROOT}/{model_dir}", api_keys=True,
                                     drain_timeout_s=DRAIN_TIMEOUT_S, replica=replica)
    try:
        return render(inputs)
    except ServingCommandError as exc:
        raise StackConfigError(f"llmrack:deployment: {exc}") from None


def serving_args(cfg: StackConfig) -> ServingArgs:
    spec, plan, acc, serving = cfg.spec, cfg.plan, cfg.accelerator, cfg.serving
    node_selector, tolerations = scheduling(acc)
    volume = serving.model_volume
    source = spec.model.source.rstrip("/")
    model_dir = spec.model.name or source.rsplit("/", 1)[-1] or spec.name
    return ServingArgs(
        deployment_name=spec.name,
        environment=spec.environment.value,
        namespace=serving.namespace,
        image=cfg.image,
        api_keys=cfg.api_keys,
        keys_store=cfg.keys_store,
        command=serving_command(cfg, model_dir),
        nodes_per_replica=plan.nodes_per_replica,
        worker_command=serving_command(cfg, model_dir, rank=1) if plan.nodes_per_replica > 1 else None,
        model_dir=model_dir,
        model_volume=ModelVolume(
            kind=volume.kind,
            path=volume.path or (source if volume.kind == "hostPath" else None),
            claim_name=volume.claim_name,
            storage_class=volume.storage_class,
            size_gib=volume.size_gib,
        ),
        vendor=acc.vendor.value,
        k8s_resource=acc.k8s_resource,
        tensor_parallel=plan.tensor_parallel,
        replicas=plan.replicas,
        node_selector=node_selector,
        tolerations=tolerations,
        canary_image=cfg.canary.image if cfg.canary else None,
        canary_weight=cfg.canary.weight if cfg.canary else None,
        service_type=serving.service.type,
        allowlist=serving.service.allowlist,
        autoscaling=serving.autoscaling.enabled,
        max_replicas=(
            (serving.autoscaling.max_replicas or cfg.replica_capacity) if serving.autoscaling.enabled else None
        ),
        target_waiting_per_pod=serving.autoscaling.target_waiting_per_pod,
        startup_timeout_s=serving.startup_timeout_s,
        run_as_user=serving.run_as_user,
    )


def component_args(cfg: StackConfig) -> ComponentArgs:
    stack = cfg.accelerator_stack
    monitoring = cfg.monitoring
    out = ComponentArgs(
        fleet=fleet_args(cfg),
        accelerator_stack=AcceleratorStackArgs(
            accelerator=cfg.accelerator.name,
            gpu_operator_version=stack.gpu_operator_version,
            gpu_operator_driver=stack.gpu_operator_driver,
            nvidia_helm_repo=stack.nvidia_helm_repo,
            ascend_device_plugin_image=stack.ascend_device_plugin_image,
            npu_exporter_image=stack.npu_exporter_image,
            label_nodes=cfg.kubernetes.label_nodes,
        ),
        serving=serving_args(cfg),
        monitoring=MonitoringArgs(
            serving_namespace=cfg.serving.namespace,
            vendor=cfg.accelerator.vendor.value,
            max_queue=cfg.spec.serving.max_queue,
            chart_version=monitoring.chart_version,
            adapter_chart_version=monitoring.adapter_chart_version,
            helm_repo=monitoring.helm_repo,
            retention=monitoring.retention,
            custom_metrics=cfg.serving.autoscaling.enabled,
            serving_tls=cfg.spec.serving.tls,
        ) if monitoring.enabled else None,
    )
    out.validate()
    return out
