"""NVIDIA GPUs: inventory, health, links and fabric, read from nvidia-smi (or NVML), the kernel log and systemd."""

from __future__ import annotations

import contextlib
from typing import Any

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
        return skip(f"{exp.unset('nvidia_driver_version')} (node runs {', '.join(versions)})")
    return judge(versions == [str(pin)], ", ".join(versions), f"== {pin}", None,
                 f"pinned by {exp.source('nvidia_driver_version')}")


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


def _remap_state(rows: nv.RemappedRows | None) -> str | None:
    """"none pending", "pending" or "failure"; None where row remapping is not reported."""
    if rows is None or rows.pending is None:
        return None
    return "failure" if rows.failure else "pending" if rows.pending else "none pending"


def nvidia_row_remap(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    gpu = _gpu(ev, index)
    rows = nv.remapped_rows(_nvml_or_smi(ev, "nvml-remapped-rows", "nvidia-smi-remapped-rows").out).get(gpu.bus_id)
    state = _remap_state(rows)
    if rows is None or state is None:
        return skip("row remapping is not reported for this GPU (a pre-Ampere part retires pages instead)")
    detail = {"pending": "a remap is pending: reset the GPU (or reboot) before serving",
              "failure": "row remapping FAILED: the GPU needs RMA"}.get(state, "")
    xids: list[int] = []
    with contextlib.suppress(Missing, ParseError):  # no kernel log: the remap state alone is judged
        xids = sorted({e.code for e in _attributed_xids(ev, exp).get(index, []) if e.code in REMAP_XIDS})
    logged = f"; the kernel log records it as XID {', '.join(map(str, xids))} (nvidia.gpu_xid)" if xids else ""
    return judge(state == "none pending", state, "== none pending", None,
                 f"{detail} (remapped: {rows.correctable} correctable, {rows.uncorrectable} uncorrectable){logged}"
                 .strip(), xids=xids)


# XIDs that record a row remap (63) or its failure (64): the same event nvidia.row_remap judges from the GPU's
# own remap state, so while that state is reported they are linked to it, not counted a second time.
REMAP_XIDS = (63, 64)


def _attributed_xids(ev: Evidence, exp: Expectations) -> dict[int | str, list[nv.XidEvent]]:
    """The kernel log's XIDs by GPU index, matched on PCI bus id; a bus id no listed GPU has (a GPU that fell off
    the bus is missing from nvidia-smi) goes to the one missing index between its listed neighbours, since
    nvidia-smi numbers GPUs in PCI bus order; an XID that cannot be placed stays under its bus id."""
    events = nv.xid_events(item(ev, "dmesg", "dmesg").out)
    gpus: list[nv.Gpu] = []
    with contextlib.suppress(Missing, ParseError):  # without a GPU list, XIDs are still reported by bus id
        gpus = _gpus(ev)
    index_of: dict[str, int] = {g.bus_id: g.index for g in gpus}
    in_bus_order = [g.index for g in sorted(gpus, key=lambda g: g.bus_id)] == sorted(index_of.values())
    missing = sorted(set(range(exp.count)) - set(index_of.values()))
    out: dict[int | str, list[nv.XidEvent]] = {}
    for e in events:
        where: int | str = index_of.get(e.bus_id, e.bus_id)
        if isinstance(where, str) and in_bus_order and missing:
            below = [i for b, i in index_of.items() if b < e.bus_id]
            above = [i for b, i in index_of.items() if b > e.bus_id]
            lo, hi = max(below, default=-1), min(above, default=exp.count)
            fits = [i for i in missing if lo < i < hi]
            if len(fits) == 1:
                where = fits[0]
        out.setdefault(where, []).append(e)
    return out


def _xid_verdicts(ev: Evidence, where: int | str, events: list[nv.XidEvent]) -> list[dict[str, Any]]:
    """Each XID with its meaning, whether it counts as a fault, and the check it is linked to."""
    out = []
    for e in events:
        remap = None
        if e.code in REMAP_XIDS:
            with contextlib.suppress(Missing, ParseError):
                remap = _remap_state(nv.remapped_rows(
                    _nvml_or_smi(ev, "nvml-remapped-rows", "nvidia-smi-remapped-rows").out).get(e.bus_id))
        # While the GPU reports its remap state, nvidia.row_remap judges the event: pending or failed fails
        # there, an applied remap is no fault.
        fault = e.node_fault and remap is None
        out.append({"code": e.code, "bus_id": e.bus_id, "gpu": where, "meaning": e.meaning, "node_fault": fault,
                    "linked": f"nvidia.row_remap (remap {remap})" if remap else None})
    return out


def _xid_line(v: dict[str, Any]) -> str:
    link = f" (the same event as {v['linked']})" if v["linked"] else ""
    return f"XID {v['code']} on GPU {v['gpu']}: {v['meaning']}{link}"


def _judge_xids(verdicts: list[dict[str, Any]]) -> Outcome:
    faults = [v for v in verdicts if v["node_fault"]]
    lines = sorted({_xid_line(v) for v in verdicts})
    return judge(not faults, len(faults), "== 0", "node-fault XIDs since boot", "; ".join(lines), events=verdicts)


def nvidia_xid(ev: Evidence, exp: Expectations) -> Outcome:
    """Node summary: every XID since boot with its GPU; the per-GPU verdicts are nvidia.gpu_xid's."""
    return _judge_xids([v for where, events in _attributed_xids(ev, exp).items()
                        for v in _xid_verdicts(ev, where, events)])


def nvidia_gpu_xid(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    """The XIDs the kernel log attributes to this GPU (by PCI bus id), so a GPU that fell off the bus fails its
    own row with the XID's meaning, not only the node's summary."""
    return _judge_xids(_xid_verdicts(ev, index, _attributed_xids(ev, exp).get(index, [])))


def nvidia_throttle(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    gpu = _gpu(ev, index)
    if gpu.throttle_reasons is None:
        return error("nvidia-smi reports neither clocks_event_reasons.active nor clocks_throttle_reasons.active")
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
                nvidia_row_remap, nvidia_gpu_xid, nvidia_throttle, nvidia_pcie_link, nvidia_nvlink)
