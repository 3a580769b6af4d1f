"""The catalogs: accelerators and models, each number with its source (see the YAML files).

`accelerator(name)` and `model(name)` are the only ways the rest of llmrack reads a hardware or
model fact, so the planner, Pulumi, Ansible defaults and validation thresholds cannot disagree.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from llmrack.arch import ModelArch, arch_from_config
from llmrack.errors import NotFoundError

GIB = 1024**3
MIB = 1024**2


class Vendor(StrEnum):
    nvidia = "nvidia"
    huawei = "huawei"


class Interconnect(StrEnum):
    nvlink = "nvlink"
    hccs = "hccs"
    pcie = "pcie"


class Accelerator(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    product: str
    vendor: Vendor
    smi_names: list[str] = Field(description="names the vendor SMI tool reports for this part")
    memory_mib: int
    bf16_tflops: float
    fp8_tflops: float | None
    int8_tops: float
    hbm_gbps: float
    interconnect: Interconnect
    interconnect_gbps: float
    nvlink_links: int
    nvswitch: bool
    pcie_gen: int
    pcie_width: int
    devices_per_node: int
    k8s_resource: str
    price_usd: float
    matmul_efficiency: float = Field(description="fraction of peak BF16 a large GEMM reaches in practice")
    hbm_efficiency: float = Field(description="fraction of peak HBM bandwidth a copy reaches in practice")
    allreduce_busbw_gbps: float = Field(description="all-reduce bus bandwidth over one node, in practice")
    internode_allreduce_busbw_gbps: float | None = Field(
        None, description="all-reduce bus bandwidth across nodes of the reference server's scale-out fabric, in "
        "practice (sources.internode says which fabric); None where no figure is known")
    sources: dict[str, str]
    uncertain: list[str] = []

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def fp8(self) -> bool:
        return self.fp8_tflops is not None

    @property
    def pcie_gbps(self) -> float:
        """One direction of the host link: ~2 GB/s per lane at Gen4 (16 GT/s, 128b/130b), doubling per gen."""
        return float(2.0 * 2 ** (self.pcie_gen - 4) * self.pcie_width * (128 / 130))

    def uncertainty_note(self) -> str | None:
        if not self.uncertain:
            return None
        return f"{self.name}: these figures are estimates, not vendor datasheet values: {', '.join(self.uncertain)}"


class CatalogModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    hf_repo: str
    published_params: float
    published_active_params: float | None = None
    source: str
    config: dict[str, Any]

    @property
    def arch(self) -> ModelArch:
        return arch_from_config(self.config, f"catalog model {self.name}")


def _load(filename: str) -> dict[str, dict[str, Any]]:
    text = resources.files("llmrack.catalog").joinpath(filename).read_text()
    data: dict[str, dict[str, Any]] = yaml.safe_load(text)
    return data


@cache
def accelerators() -> dict[str, Accelerator]:
    return {name: Accelerator(name=name, **entry) for name, entry in _load("accelerators.yaml").items()}


@cache
def models() -> dict[str, CatalogModel]:
    return {name: CatalogModel(name=name, **entry) for name, entry in _load("models.yaml").items()}


def accelerator(name: str) -> Accelerator:
    try:
        return accelerators()[name]
    except KeyError:
        raise NotFoundError.for_name("accelerator", name, accelerators()) from None


def model(name: str) -> CatalogModel:
    try:
        return models()[name]
    except KeyError:
        raise NotFoundError.for_name("model", name, models()) from None


def accelerator_for_smi_name(smi_name: str) -> Accelerator | None:
    """The catalog entry whose SMI name matches what a node reports (validation uses this)."""
    for acc in accelerators().values():
        if smi_name.strip() in acc.smi_names:
            return acc
    return None
