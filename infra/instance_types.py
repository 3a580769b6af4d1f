"""Cloud instance types for accelerator fleets: cloud facts, kept apart from the hardware catalog.

The hardware itself (memory, TFLOPS, devices per node, k8s resource name) lives in llmrack.catalog;
what a cloud sells around it (which instance carries which part, how many EFA interfaces it has)
is a fact about the cloud, so it lives here, each entry with its source. The fleet component reads
this table to pick an instance type for the spec's accelerator and to attach EFA where it exists.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    name: str
    accelerator: str  # a llmrack.catalog accelerator name
    accelerators: int  # devices per instance; a test and AwsFleetArgs check it equals the catalog's devices_per_node
    efa_interfaces: int  # EFA devices to attach, one per network card; 0: the type has no EFA
    source: str


AWS_INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        InstanceType(
            "p4d.24xlarge", "a100-40g", 8, 4,
            "AWS EC2 P4 instances page: 8x A100 40GB, 400 Gbps networking with EFA over 4 network cards",
        ),
        InstanceType(
            "p4de.24xlarge", "a100-80g", 8, 4,
            "AWS EC2 P4 instances page: p4de.24xlarge, 8x A100 80GB, 400 Gbps with EFA over 4 network cards",
        ),
        InstanceType(
            "p5.48xlarge", "h100", 8, 32,
            "AWS EC2 P5 instances page and EFA user guide: 8x H100 80GB, 3200 Gbps EFAv2 over 32 network cards",
        ),
        InstanceType(
            "p5e.48xlarge", "h200", 8, 32,
            "AWS EC2 P5 instances page: p5e.48xlarge, 8x H200 141GB, 3200 Gbps EFA over 32 network cards",
        ),
        InstanceType(
            "p5en.48xlarge", "h200", 8, 16,
            "AWS EC2 P5 instances page: p5en.48xlarge, 8x H200 141GB, 3200 Gbps EFAv3 over 16 network cards",
        ),
    )
}

# Preferred AWS type per accelerator when the stack does not name one (the first listed above).
AWS_DEFAULT_FOR_ACCELERATOR: dict[str, str] = {}
for _t in AWS_INSTANCE_TYPES.values():
    AWS_DEFAULT_FOR_ACCELERATOR.setdefault(_t.accelerator, _t.name)
