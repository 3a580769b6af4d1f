"""Each component checks its own arguments before creating anything, naming the argument."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infra.components._args import ComponentArgsError
from infra.components.accelerator_stack import AcceleratorStackArgs, scheduling
from infra.components.aws_fleet import AwsFleetArgs
from infra.components.inventory import InventoryHost, inventory_document
from infra.components.monitoring import MonitoringArgs
from infra.components.serving import ModelVolume, ServingArgs
from infra.components.static_fleet import StaticFleetArgs
from infra.instance_types import AWS_INSTANCE_TYPES
from infra.rules import StackConfigError, canary_replicas
from llmrack import catalog
from llmrack.contracts.serving_command import ServingCommand, ServingInputs, render

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "registry.example/llmrack/serving@sha256:" + "b" * 64


def _command(**changes: object) -> ServingCommand:
    base: dict[str, object] = dict(
        engine="auto", node="cuda", model_path="/models/m", served_model_name="m", weights_dtype="bf16",
        kv_cache_dtype="bf16", tensor_parallel=2, pipeline_parallel=1, max_model_len=4096, max_num_seqs=8,
        max_queue=16, port=8000, memory_utilization=0.9, kv_cache_bytes=1 << 30,
    )
    base.update(changes)
    return render(ServingInputs(**base))  # type: ignore[arg-type]


def _serving(**changes: object) -> ServingArgs:
    base: dict[str, object] = dict(
        deployment_name="d", environment="dev", namespace="llmrack", image=IMAGE, api_keys=["k"],
        command=_command(), model_dir="m", model_volume=ModelVolume(kind="pvc"), vendor="nvidia",
        k8s_resource="nvidia.com/gpu", tensor_parallel=2, replicas=2,
    )
    base.update(changes)
    return ServingArgs(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("args", "fragment"), [
    (lambda: AwsFleetArgs(region="us-east-1", instance_type="p3.16xlarge", count=1, ami="ami", subnet_id="s",
                          security_group_ids=["sg"], devices_per_node=8, serving_port=8000, deployment={}),
     "AwsFleetArgs.instance_type"),
    (lambda: AwsFleetArgs(region="us-east-1", instance_type="p5.48xlarge", count=0, ami="ami", subnet_id="s",
                          security_group_ids=["sg"], devices_per_node=8, serving_port=8000, deployment={}),
     "AwsFleetArgs.count"),
    (lambda: AwsFleetArgs(region="us-east-1", instance_type="p5.48xlarge", count=1, ami="ami", subnet_id="s",
                          security_group_ids=["sg"], devices_per_node=4, serving_port=8000, deployment={}),
     "the catalog disagrees"),
    (lambda: StaticFleetArgs(hosts=[InventoryHost("a", "10.0.0.1", "root")] * 2, vendor="nvidia",
                             devices_per_node=8, serving_port=8000, deployment={}),
     "host names must be unique"),
    (lambda: AcceleratorStackArgs(accelerator="ascend-910b"), "ascend_device_plugin_image"),
    (lambda: AcceleratorStackArgs(accelerator="tpu-v5"), "AcceleratorStackArgs.accelerator"),
    (lambda: MonitoringArgs(serving_namespace="llmrack", vendor="amd", max_queue=1), "MonitoringArgs.vendor"),
    (lambda: _serving(command=_command(api_keys=False)), "ServingArgs.command"),
    (lambda: _serving(vendor="amd"), "ServingArgs.vendor"),
])
def test_bad_component_args_are_refused(args: object, fragment: str) -> None:
    with pytest.raises(StackConfigError) as info:
        args().validate()  # type: ignore[operator]
    assert fragment in str(info.value)


def test_component_args_error_is_a_run_error_for_a_clean_pulumi_message() -> None:
    import pulumi

    assert issubclass(ComponentArgsError, pulumi.RunError)


def test_canary_split_takes_replicas_from_the_stable_track() -> None:
    assert canary_replicas(4, 25) == (3, 1)
    assert canary_replicas(4, 75) == (1, 3)
    with pytest.raises(StackConfigError, match=r"shares possible are \[25, 50, 75\]%"):
        canary_replicas(4, 5)
    with pytest.raises(StackConfigError, match="at least 2 replicas"):
        canary_replicas(1, 50)


def test_scheduling_comes_from_the_catalog() -> None:
    selector, tolerations = scheduling(catalog.accelerator("h100"))
    assert selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert tolerations[0]["key"] == "nvidia.com/gpu"
    selector, tolerations = scheduling(catalog.accelerator("ascend-910b"))
    assert selector == {"accelerator": "huawei-Ascend910"} and tolerations[0]["key"] == "huawei.com/Ascend910"


def test_inventory_document_groups_hosts_by_vendor() -> None:
    # A deployment that fits one node (one-node replicas): the dev stack's.
    deployment = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]["llmrack:deployment"]
    doc = inventory_document([("n1", "10.0.0.5", "root", 22)], "huawei", 8, 8000, deployment)
    groups = doc["hosts"]["all"]["children"]["serving_nodes"]["children"]
    assert groups["ascend_nodes"]["hosts"]["n1"]["llmrack_serving_url"] == "http://10.0.0.5:8000"
    assert groups["nvidia_nodes"]["hosts"] == {}
    assert doc["hosts"]["all"]["children"]["monitoring"]["hosts"] == {"n1": {}}


def test_every_aws_instance_type_agrees_with_the_catalog() -> None:
    # The cloud table and the hardware catalog both count a node's accelerators; they must never drift.
    for itype in AWS_INSTANCE_TYPES.values():
        assert itype.accelerators == catalog.accelerator(itype.accelerator).devices_per_node, itype.name
