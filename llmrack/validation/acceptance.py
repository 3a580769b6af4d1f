"""Acceptance thresholds a deployment may set (spec `validation.acceptance`, `--expect NAME=VALUE`), with defaults.

The utilisation and latency rules are the DeepSeek private-deployment selection guide's (2025-09-15, section 3,
performance evaluation metrics): FLOPS utilisation should stay at or above 70 %, memory bandwidth utilisation
reach 60 % of the device's bandwidth, and PCIe Gen4 latency stay within 2 us. The other defaults are llmrack's own,
each with its reason in docs/validation.md#thresholds-and-their-sources. Light on purpose: the spec imports it.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

GUIDE = "DeepSeek private-deployment selection guide (2025-09-15)"


class Acceptance(BaseModel):
    """Per-deployment acceptance thresholds of the performance checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    matmul_peak_fraction: float = Field(0.70, gt=0, le=1, description=f"BF16 matmul vs peak FLOPS ({GUIDE}: >= 70 %)")
    membw_peak_fraction: float = Field(0.60, gt=0, le=1,
                                       description=f"device memory bandwidth vs peak ({GUIDE}: >= 60 %)")
    pcie_latency_us: float = Field(2.0, gt=0, le=1000,
                                   description=f"host-to-device small-copy latency, per copy ({GUIDE}: <= 2 us)")
    h2d_link_fraction: float = Field(0.65, gt=0, le=1, description="pinned 64 MiB host-to-device copy vs the link")
    allreduce_practical_fraction: float = Field(0.80, gt=0, le=1,
                                                description="all-reduce busbw vs the catalog's practical figure")
    # Device-to-device small-copy latency per link kind (the catalog's interconnect): CUDA's
    # p2pBandwidthLatencyTest measures ~1.8-2.3 us with P2P over NVLink and 11-21 us without P2P over PCIe
    # (docs/validation.md); the bounds leave room above those.
    p2p_latency_us_nvlink: float = Field(3.0, gt=0, le=1000, description="NVLink/HCCS peer copy latency")
    p2p_latency_us_pcie: float = Field(25.0, gt=0, le=1000, description="PCIe peer copy latency")


# Expectation variables a deployment may pin outside the inventory (spec `validation.expect`, `--expect`); the
# inventory's host variables of the same names (llmrack.validation.expect) are the other way to set them.
EXPECTATION_VARS = (
    "nvidia_driver_version",
    "ascend_driver_version",
    "ascend_driver_firmware_version",
    "ascend_driver_cann_version",
    "common_sysctl",
    "common_kernel_cmdline",
    "llmrack_accelerator_count",
    "llmrack_validation_services",
    "llmrack_validation_completion_seconds",
    # The golden-output reference file on the control machine (llmrack.validation.golden).
    "llmrack_validation_golden",
    # The fabric between a replica's nodes (llmrack.validation.fabric): nccl-tests' all_reduce_perf on the nodes,
    # and the bus bandwidth floor across nodes in GB/s (default: the catalog's figure).
    "llmrack_validation_all_reduce_perf",
    "llmrack_validation_internode_gbps",
)


class ValidationSpec(BaseModel):
    """The spec's `validation` section: pinned expectations and acceptance thresholds for this deployment."""

    model_config = ConfigDict(extra="forbid")

    expect: dict[str, Any] = Field(default_factory=dict, description="pinned expectations, e.g. "
                                   "nvidia_driver_version (docs/validation.md); thresholds go under acceptance")
    acceptance: Acceptance = Acceptance()

    @field_validator("expect")
    @classmethod
    def _known(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if name in Acceptance.model_fields:
                raise ValueError(f"{name} is an acceptance threshold: set it under validation.acceptance")
            check_expectation_name(name)
        return value


def check_expectation_name(name: str) -> str:
    """`name` if it is an expectation variable or an acceptance threshold; else ValueError with the nearest."""
    known = (*EXPECTATION_VARS, *Acceptance.model_fields)
    if name in known:
        return name
    near = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {near[0]}? " if near else ""
    raise ValueError(f"unknown expectation {name!r}: {hint}known: {', '.join(known)}")
