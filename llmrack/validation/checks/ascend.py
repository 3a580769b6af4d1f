"""Huawei Ascend NPUs: count, health, HBM, the pinned driver/firmware/CANN stack and HCCN links, from npu-smi
and hccn_tool."""

from __future__ import annotations

from llmrack.validation.checks.base import (
    CheckFn,
    Missing,
    Outcome,
    accelerator,
    failed,
    item,
    judge,
    memory_vs_catalog,
    pinned,
)
from llmrack.validation.checks.family import AcceleratorFamily
from llmrack.validation.evidence import Evidence
from llmrack.validation.expect import Expectations, NodeKind
from llmrack.validation.parsers import ascend as asc


def _npus(ev: Evidence) -> tuple[str | None, list[asc.Npu]]:
    return asc.npu_smi_info(item(ev, "npu-smi-info", "npu-smi").out)


def _npu(ev: Evidence, index: int) -> asc.Npu:
    for npu in _npus(ev)[1]:
        if npu.npu == index:
            return npu
    raise Missing(failed("absent", "present", None, f"NPU {index} is not listed by npu-smi info"))


def ascend_npu_count(ev: Evidence, exp: Expectations) -> Outcome:
    count = len(_npus(ev)[1])
    return judge(count == exp.count, count, f"== {exp.count}", "NPUs")


def ascend_health(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    npu, acc = _npu(ev, index), accelerator(exp)
    problems = [] if npu.health == "OK" else [f"npu-smi health {npu.health}"]
    if npu.name not in acc.smi_names:
        problems.append(f"{npu.name} is not a {acc.name} ({' | '.join(acc.smi_names)})")
    return judge(not problems, f"{npu.health} ({npu.name})", "== OK", None, "; ".join(problems))


def ascend_hbm(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    npu = _npu(ev, index)
    return memory_vs_catalog(npu.hbm_total_mb, accelerator(exp), "MB", "npu-smi info reports no HBM total")


def ascend_driver_version(ev: Evidence, exp: Expectations) -> Outcome:
    return pinned(exp, "ascend_driver_version",
                   asc.version_info(item(ev, "ascend-driver-version", "driver version.info").out), "driver version")


def ascend_cann_version(ev: Evidence, exp: Expectations) -> Outcome:
    return pinned(exp, "ascend_driver_cann_version",
                   asc.version_info(item(ev, "ascend-cann-version", "CANN toolkit install.info").out), "CANN version")


def ascend_firmware_version(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    versions = asc.firmware_versions(item(ev, "npu-smi-board", "npu-smi").out)
    return pinned(exp, "ascend_driver_firmware_version", versions.get(index), f"NPU {index} firmware version")


def ascend_hccn_link(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    status = asc.hccn_links(item(ev, "hccn-link", "hccn_tool").out).get(index)
    return judge(status == "UP", status or "not reported", "== UP", None, "HCCN (RoCE) port of the NPU")


class AscendFamily(AcceleratorFamily):
    kind = NodeKind.ascend
    torch_device = "npu"  # with torch_npu
    runtime_markers = ("runtimes.ascend", "ascend-docker-runtime")

    def node_checks(self) -> tuple[CheckFn, ...]:
        return (ascend_npu_count, ascend_driver_version, ascend_cann_version)

    def device_checks(self) -> tuple[CheckFn, ...]:
        return (ascend_health, ascend_hbm, ascend_firmware_version, ascend_hccn_link)
