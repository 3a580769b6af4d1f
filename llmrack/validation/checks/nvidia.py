"""NVIDIA GPUs: inventory, health, links and fabric, read from nvidia-smi (or NVML), the kernel log and systemd."""

from __future__ import annotations

import contextlib

from llmrack.validation.checks.base import (
    CheckFn,
    Missing,
    Outcome,
    accelerator,
    error,
    failed,
    item,
    judge,
    memory_vs_catalog,
    skip,
)
from llmrack.validation.checks.family import AcceleratorFamily
from llmrack.validation.evidence import Evidence, Item
from llmrack.validation.expect import Expectations, NodeKind
from llmrack.validation.parsers import ParseError
from llmrack.validation.parsers import nvidia as nv
from llmrack.validation.parsers import system as sysp


def _nvml_or_smi(ev: Evidence, nvml_name: str, smi_name: str) -> Item:
    """NVML's answer when the node's Python could read it (nvidia-ml-py), nvidia-smi's otherwise."""
    got = ev.get(nvml_name)
    if got is not None and got.rc == 0 and got.out.strip():
        return got
    return item(ev, smi_name, "nvidia-smi")


def _gpus(ev: Evidence) -> list[nv.Gpu]:
    return nv.gpus(_nvml_or_smi(ev, "nvml-query", "nvidia-smi-query").out)


def _gpu(ev: Evidence, index: int) -> nv.Gpu:
    for gpu in _gpus(ev):
        if gpu.index == index:
            return gpu
    raise Missing(failed("absent", "present", None, f"GPU {index} is not reported by nvidia-smi"))


def nvidia_gpu_count(ev: Evidence, exp: Expectations) -> Outcome:
    count = len(_gpus(ev))
    return judge(count == exp.count, count, f"== {exp.count}", "GPUs")


def nvidia_sku(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    gpu, acc = _gpu(ev, index), accelerator(exp)
    return judge(gpu.name in acc.smi_names, gpu.name, "in " + " | ".join(acc.smi_names), None, f"catalog: {acc.name}")


def nvidia_memory(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    gpu = _gpu(ev, index)
    return memory_vs_catalog(gpu.memory_mib, accelerator(exp), "MiB", "nvidia-smi reported no memory.total")


def nvidia_driver_version(ev: Evidence, exp: Expectations) -> Outcome:
    pin = exp.var("nvidia_driver_version")
    versions = sorted({g.driver_version or "?" for g in _gpus(ev)})
    if not versions:
        return failed("no GPU", f"== {pin}", None, "nvidia-smi lists no GPU")
    if not pin:
        return skip(f"the inventory pins no nvidia_driver_version (node runs {', '.join(versions)})")
    return judge(versions == [str(pin)], ", ".join(versions), f"== {pin}", None)


def nvidia_persistence_mode(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    mode = _gpu(ev, index).persistence_mode
    if mode is None:
        return error("the node's nvidia-smi/NVML does not report persistence_mode")
    return judge(mode == "Enabled", mode, "== Enabled", None,
                 "" if mode == "Enabled" else "without persistence the driver tears down and re-initialises the GPU")


def nvidia_ecc_mode(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    mode = _gpu(ev, index).ecc_mode
    if mode is None:
        return error("the node's nvidia-smi/NVML does not report ecc.mode.current")
    return judge(mode == "Enabled", mode, "== Enabled", None)


def nvidia_ecc_uncorrectable(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    gpu = _gpu(ev, index)
    if gpu.ecc_uncorrected_volatile is None:
        return error("nvidia-smi reports no uncorrectable ECC count (ECC off or unsupported)")
    return judge(gpu.ecc_uncorrected_volatile == 0, gpu.ecc_uncorrected_volatile, "== 0", "errors",
                 f"since boot; lifetime (aggregate): {gpu.ecc_uncorrected_aggregate}")


def nvidia_row_remap(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    gpu = _gpu(ev, index)
    rows = nv.remapped_rows(_nvml_or_smi(ev, "nvml-remapped-rows", "nvidia-smi-remapped-rows").out).get(gpu.bus_id)
    if rows is None or rows.pending is None:
        return skip("row remapping is not reported for this GPU (a pre-Ampere part retires pages instead)")
    state = "failure" if rows.failure else "pending" if rows.pending else "none pending"
    detail = {"pending": "a remap is pending: reset the GPU (or reboot) before serving",
              "failure": "row remapping FAILED: the GPU needs RMA"}.get(state, "")
    return judge(state == "none pending", state, "== none pending", None,
                 f"{detail} (remapped: {rows.correctable} correctable, {rows.uncorrectable} uncorrectable)".strip())


def nvidia_xid(ev: Evidence, exp: Expectations) -> Outcome:
    events = nv.xid_events(item(ev, "dmesg", "dmesg").out)
    index_of = {}
    with contextlib.suppress(Missing, ParseError):  # without a GPU list, XIDs are still reported by bus id
        index_of = {g.bus_id: g.index for g in _gpus(ev)}
    faults = [e for e in events if e.node_fault]
    lines = sorted({f"XID {e.code} on GPU {index_of.get(e.bus_id, e.bus_id)}: {e.meaning}" for e in events})
    return judge(not faults, len(faults), "== 0", "node-fault XIDs since boot", "; ".join(lines),
                 events=[{"code": e.code, "bus_id": e.bus_id, "meaning": e.meaning, "node_fault": e.node_fault}
                         for e in events])


def nvidia_throttle(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    gpu = _gpu(ev, index)
    if gpu.throttle_reasons is None:
        return error("nvidia-smi reports no clocks_throttle_reasons.active")
    names = nv.throttle_names(gpu.throttle_reasons)
    bad = [n for n, fault in names if fault]
    return judge(not bad, ", ".join(n for n, _ in names) or "none", "no HW/thermal/power-brake slowdown", None,
                 f"mask {gpu.throttle_reasons:#x}")


def nvidia_pcie_link(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    gpu, acc = _gpu(ev, index), accelerator(exp)
    if gpu.pcie_width is None or gpu.pcie_gen_max is None:
        return error("nvidia-smi reports no PCIe link generation/width")
    problems = []
    if gpu.pcie_width < acc.pcie_width:
        problems.append(f"link trained at x{gpu.pcie_width}, the part is x{acc.pcie_width}")
    if gpu.pcie_gen_max < acc.pcie_gen:
        problems.append(f"max Gen{gpu.pcie_gen_max} (slot or riser), the part is Gen{acc.pcie_gen}")
    note = ""
    if gpu.pcie_gen is not None and gpu.pcie_gen < gpu.pcie_gen_max:
        # Idle GPUs drop the link speed to save power; it is only a fault when the GPU is busy (P0).
        if gpu.pstate == "P0":
            problems.append(f"running at Gen{gpu.pcie_gen} under load (P0), max Gen{gpu.pcie_gen_max}")
        else:
            note = (f"current Gen{gpu.pcie_gen} while idle ({gpu.pstate}): power-saving downshift; "
                    "the H2D probe (standard level) measures the link under load")
    measured = f"Gen{gpu.pcie_gen_max} x{gpu.pcie_width}"
    return judge(not problems, measured, f">= Gen{acc.pcie_gen} x{acc.pcie_width}", None,
                 "; ".join(problems + ([note] if note else [])))


def nvidia_nvlink(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    acc = accelerator(exp)
    if acc.nvlink_links == 0:
        return skip(f"{acc.name} is a PCIe part: no NVLink expected")
    _gpu(ev, index)  # a GPU the driver lost has no link worth reading
    got = item(ev, "nvidia-smi-nvlink", "nvidia-smi")
    status = nv.nvlink_status(got.out)
    if not status:
        said = (got.out.strip() or got.err.strip()).splitlines()[:1]
        return error(f"`nvidia-smi nvlink -s` listed no GPU (exit {got.rc}): {said[0] if said else 'no output'}")
    links = status.get(index)
    if links is None:
        return failed("absent", f"== {acc.nvlink_links} active", "links", f"GPU {index} missing from nvlink -s")
    active = [i for i, speed in links.items() if speed]
    inactive = sorted(set(links) - set(active))
    return judge(len(active) == acc.nvlink_links, len(active), f"== {acc.nvlink_links}", "active links",
                 f"inactive: {', '.join(map(str, inactive))}" if inactive else "")


def nvidia_fabricmanager(ev: Evidence, exp: Expectations) -> Outcome:
    acc = accelerator(exp)
    if not acc.nvswitch:
        return skip(f"{acc.name} systems have no NVSwitch: no Fabric Manager needed")
    state = sysp.unit_states(item(ev, "systemctl", "systemctl").out).get("nvidia-fabricmanager")
    active = state.active if state else "not reported"
    if active != "active":
        return failed(f"nvidia-fabricmanager {active}", "== active", None,
                      "without Fabric Manager NVSwitch systems fail CUDA init (error 802) or run without NVLink")
    fm = nv.fabricmanager_version(item(ev, "fabricmanager-version", "nv-fabricmanager").out)
    drivers = {g.driver_version for g in _gpus(ev)}
    want = "== driver " + ", ".join(sorted(map(str, drivers)))
    return judge(fm is not None and drivers == {fm}, f"active, {fm}", want,
                 None, "Fabric Manager must be the exact driver version")


class NvidiaFamily(AcceleratorFamily):
    kind = NodeKind.nvidia
    torch_device = "cuda"
    runtime_markers = ("runtimes.nvidia", "nvidia-container-runtime")
    needs_nccl_env = True

    def node_checks(self) -> tuple[CheckFn, ...]:
        return (nvidia_gpu_count, nvidia_driver_version, nvidia_xid, nvidia_fabricmanager)

    def device_checks(self) -> tuple[CheckFn, ...]:
        return (nvidia_sku, nvidia_memory, nvidia_persistence_mode, nvidia_ecc_mode, nvidia_ecc_uncorrectable,
                nvidia_row_remap, nvidia_throttle, nvidia_pcie_link, nvidia_nvlink)
