"""The checks: evidence + expectations -> Outcome. One function per check; the pytest suite calls them.

Every threshold is a named constant here or a catalog figure; docs/validation.md gives the source of each.
A check that could not measure what it judges returns skip (with the reason) or error, never pass.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from llmrack.catalog import Accelerator
from llmrack.validation.evidence import PROBE, Evidence, Item
from llmrack.validation.expect import Expectations, NodeKind
from llmrack.validation.parsers import ParseError
from llmrack.validation.parsers import ascend as asc
from llmrack.validation.parsers import nvidia as nv
from llmrack.validation.parsers import system as sysp

Status = Literal["pass", "fail", "skip", "error"]

# Performance thresholds (docs/validation.md#thresholds).
# The 70%/60% acceptance rule as issue 5 quotes it from an unnamed deployment guide (no source found yet).
MATMUL_PEAK_FRACTION = 0.70  # at least 70% of peak dense FLOPS
MEMBW_PEAK_FRACTION = 0.60  # at least 60% of peak memory bandwidth
H2D_LINK_FRACTION = 0.65  # pinned H2D copies reach ~80% of a healthy PCIe link; 65% leaves room for noise
ALLREDUCE_PRACTICAL_FRACTION = 0.80  # of the catalog's practical nccl-tests bus bandwidth for the topology
CPU_GEMM_PEAK_FRACTION = 0.15  # floor vs a lower-bound ISA peak estimate: catches starved/throttled CPUs only
CPU_MEMBW_FLOOR_GBPS = 2.0  # one DDR4 channel alone gives > 15 GB/s; below 2 the node is starved
COMPLETION_SECONDS = 30.0  # default liveness bound for one short completion (inventory may override)
MEMORY_FRACTION = 0.99  # device memory as reported vs the catalog's figure (SMI tools round a little)


@dataclass
class Outcome:
    status: Status
    measured: Any = None
    threshold: str | None = None
    unit: str | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def passed(measured: Any, threshold: str | None, unit: str | None = None, detail: str = "", **data: Any) -> Outcome:
    return Outcome("pass", measured, threshold, unit, detail, data)


def failed(measured: Any, threshold: str | None, unit: str | None = None, detail: str = "", **data: Any) -> Outcome:
    return Outcome("fail", measured, threshold, unit, detail, data)


def judge(ok: bool, measured: Any, threshold: str | None, unit: str | None, detail: str = "", **data: Any) -> Outcome:
    return Outcome("pass" if ok else "fail", measured, threshold, unit, detail, data)


def skip(reason: str) -> Outcome:
    return Outcome("skip", detail=reason)


def error(reason: str) -> Outcome:
    return Outcome("error", detail=reason)


class Missing(Exception):
    """Raised inside a check when evidence it needs is absent; turned into the Outcome it carries."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


def item(ev: Evidence, name: str, tool: str, required: bool = True) -> Item:
    """The evidence item, or Missing: not in the dump -> skip; tool absent/failing on the node -> fail/error."""
    got = ev.get(name)
    if got is None:
        raise Missing(skip(f"the evidence has no {name!r} (dump collected with an older or partial collector)"))
    if got.missing_tool:
        if required:
            raise Missing(failed("not installed", "installed", None, f"{tool} is not installed on the node"))
        raise Missing(skip(f"{tool} is not installed on the node"))
    if got.rc != 0 and not got.out.strip():
        raise Missing(error(f"`{tool}` exited {got.rc}: {got.err.strip()[:300]}"))
    # A non-zero exit WITH output (nvidia-smi when one GPU is lost) still describes the devices that answered.
    return got


CheckFn = Callable[..., Outcome]


def run(fn: CheckFn, ev: Evidence, exp: Expectations, *args: Any) -> Outcome:
    try:
        return fn(ev, exp, *args)
    except Missing as exc:
        return exc.outcome
    except ParseError as exc:
        return error(f"could not parse the node's output: {exc}")


# --- OS and runtime -------------------------------------------------------------------------------
def container(ev: Evidence) -> str | None:
    """The container manager when the node is a container (the lab's nodes), else None."""
    got = ev.get("virt")
    name = got.out.strip() if got is not None and got.rc == 0 else ""
    return name if name and name != "none" else None


def os_sysctl(ev: Evidence, exp: Expectations) -> Outcome:
    expected: dict[str, Any] = exp.var("common_sysctl") or {}
    if not expected:
        return skip("neither the inventory nor the common role's defaults set common_sysctl: nothing to compare")
    where = container(ev)
    if where:
        # Kernel-wide parameters of a container are its host's: judge what the node persists instead.
        actual = sysp.sysctl(item(ev, "sysctl-files", "cat /etc/sysctl.d").out)
    else:
        actual = sysp.sysctl(item(ev, "sysctl", "sysctl").out)
    wrong = {k: actual.get(k, "<absent>") for k, v in expected.items() if actual.get(k) != " ".join(str(v).split())}
    detail = "; ".join(f"{k} = {v} (want {expected[k]})" for k, v in wrong.items())
    n = len(expected)
    if where:
        detail = f"{where} container: checked the persisted /etc/sysctl.d values (the kernel is the host's). {detail}"
    return judge(not wrong, f"{n - len(wrong)}/{n} as set", f"== {n}/{n}",
                 None, detail.strip(), mismatches=wrong)


def os_kernel_cmdline(ev: Evidence, exp: Expectations) -> Outcome:
    expected = [str(p) for p in exp.var("common_kernel_cmdline") or []]
    if not expected:
        return skip("neither the inventory nor the common role's defaults set common_kernel_cmdline")
    if container(ev):
        return skip(f"{container(ev)} container: it boots no kernel of its own, so it has no command line to check")
    actual = sysp.cmdline(item(ev, "cmdline", "/proc/cmdline").out)
    missing = []
    for param in expected:
        key, _, value = param.partition("=")
        if key not in actual or (_ and actual[key] != value):
            missing.append(param)
    n = len(expected)
    return judge(not missing, f"{n - len(missing)}/{n} present", f"== {n}/{n}",
                 None, ("missing: " + " ".join(missing)) if missing else "")


def os_nouveau_absent(ev: Evidence, exp: Expectations) -> Outcome:
    loaded = "nouveau" in sysp.modules(item(ev, "modules", "/proc/modules").out)
    return judge(not loaded, "loaded" if loaded else "not loaded", "== not loaded", None,
                 "nouveau holds the GPUs; the NVIDIA driver cannot bind them" if loaded else "")


def os_services(ev: Evidence, exp: Expectations) -> Outcome:
    units = exp.services()
    states = sysp.unit_states(item(ev, "systemctl", "systemctl").out)
    bad = [f"{u} ({states[u].enabled}/{states[u].active})" if u in states else f"{u} (not reported)"
           for u in units if u not in states or states[u].enabled != "enabled" or states[u].active != "active"]
    return judge(not bad, f"{len(units) - len(bad)}/{len(units)} enabled+active", f"== {len(units)}/{len(units)}", None,
                 ("not enabled and active: " + ", ".join(bad)) if bad else "units: " + ", ".join(units))


RUNTIME_MARKERS = {
    NodeKind.nvidia: ("runtimes.nvidia", "nvidia-container-runtime"),
    NodeKind.ascend: ("runtimes.ascend", "ascend-docker-runtime"),
    NodeKind.cpu: ("runtimes.runc", "io.containerd.runc.v2"),
}


def os_containerd_runtime(ev: Evidence, exp: Expectations) -> Outcome:
    config = item(ev, "containerd-config", "containerd").out
    markers = RUNTIME_MARKERS[exp.kind]
    found = [m for m in markers if m in config]
    return judge(len(found) == len(markers), ", ".join(found) or "none", "all of " + ", ".join(markers), None,
                 f"`containerd config dump` (drop-ins merged) must configure the {exp.kind} runtime")


def os_nccl_env(ev: Evidence, exp: Expectations) -> Outcome:
    got = ev.get("nccl-env")
    if got is None:
        return skip("the evidence has no 'nccl-env'")
    if got.rc != 0:
        if exp.kind is NodeKind.nvidia:
            return failed("absent", "present", None, "/etc/llmrack/nccl.env is missing")
        return skip(f"{exp.kind} node without /etc/llmrack/nccl.env: NCCL is only used on NVIDIA nodes")
    env = sysp.env_file(got.out)
    problems = []
    if "NCCL_SOCKET_IFNAME" in env:
        known = sysp.interfaces(item(ev, "ip-link", "ip").out)
        for name in env["NCCL_SOCKET_IFNAME"].lstrip("^=").split(","):
            # NCCL matches a prefix unless the list starts with "=".
            if name and not any(i == name or i.startswith(name) for i in known):
                problems.append(f"NCCL_SOCKET_IFNAME names {name!r}, no such interface")
    if env.get("NCCL_IB_HCA"):
        hcas = set((ev.get("infiniband") or Item("infiniband", 1, "")).out.split())
        for name in env["NCCL_IB_HCA"].lstrip("^=").split(","):
            dev = name.split(":")[0]
            if dev and not any(h.startswith(dev) for h in hcas):
                problems.append(f"NCCL_IB_HCA names {dev!r}, not in /sys/class/infiniband")
    if exp.accelerator is not None and exp.accelerator.nvlink_links and env.get("NCCL_P2P_DISABLE") == "1":
        problems.append("NCCL_P2P_DISABLE=1 on an NVLink system turns NVLink peer-to-peer off")
    return judge(not problems, f"{len(env)} variables, {len(problems)} inconsistent", "== 0 inconsistent", None,
                 "; ".join(problems), env=env)


# --- NVIDIA ---------------------------------------------------------------------------------------
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


def _acc(exp: Expectations) -> Accelerator:
    assert exp.accelerator is not None, "NVIDIA/Ascend checks run only on nodes with an accelerator"
    return exp.accelerator


def nvidia_gpu_count(ev: Evidence, exp: Expectations) -> Outcome:
    count = len(_gpus(ev))
    return judge(count == exp.count, count, f"== {exp.count}", "GPUs")


def nvidia_sku(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    gpu, acc = _gpu(ev, index), _acc(exp)
    return judge(gpu.name in acc.smi_names, gpu.name, "in " + " | ".join(acc.smi_names), None, f"catalog: {acc.name}")


def nvidia_memory(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    gpu = _gpu(ev, index)
    return _memory_vs_catalog(gpu.memory_mib, _acc(exp), "MiB", "nvidia-smi reported no memory.total")


def _memory_vs_catalog(measured: int | None, acc: Accelerator, unit: str, absent: str) -> Outcome:
    """Device memory as the SMI tool reports it against the catalog's figure for the part."""
    if measured is None:
        return error(absent)
    floor = round(acc.memory_mib * MEMORY_FRACTION)
    return judge(measured >= floor, measured, f">= {floor}", unit)


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
    gpu, acc = _gpu(ev, index), _acc(exp)
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
    acc = _acc(exp)
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
    acc = _acc(exp)
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


# --- Ascend ---------------------------------------------------------------------------------------
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
    npu, acc = _npu(ev, index), _acc(exp)
    problems = [] if npu.health == "OK" else [f"npu-smi health {npu.health}"]
    if npu.name not in acc.smi_names:
        problems.append(f"{npu.name} is not a {acc.name} ({' | '.join(acc.smi_names)})")
    return judge(not problems, f"{npu.health} ({npu.name})", "== OK", None, "; ".join(problems))


def ascend_hbm(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    npu = _npu(ev, index)
    return _memory_vs_catalog(npu.hbm_total_mb, _acc(exp), "MB", "npu-smi info reports no HBM total")


def _pinned(exp: Expectations, var: str, actual: str | None, what: str) -> Outcome:
    pin = exp.var(var)
    if actual is None:
        return error(f"the node does not report its {what}")
    if not pin:
        return skip(f"the inventory pins no {var} (node runs {actual})")
    return judge(str(pin) == actual, actual, f"== {pin}", None)


def ascend_driver_version(ev: Evidence, exp: Expectations) -> Outcome:
    return _pinned(exp, "ascend_driver_version",
                   asc.version_info(item(ev, "ascend-driver-version", "driver version.info").out), "driver version")


def ascend_cann_version(ev: Evidence, exp: Expectations) -> Outcome:
    return _pinned(exp, "ascend_driver_cann_version",
                   asc.version_info(item(ev, "ascend-cann-version", "CANN toolkit install.info").out), "CANN version")


def ascend_firmware_version(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    versions = asc.firmware_versions(item(ev, "npu-smi-board", "npu-smi").out)
    return _pinned(exp, "ascend_driver_firmware_version", versions.get(index), f"NPU {index} firmware version")


def ascend_hccn_link(ev: Evidence, exp: Expectations, index: int) -> Outcome:
    status = asc.hccn_links(item(ev, "hccn-link", "hccn_tool").out).get(index)
    return judge(status == "UP", status or "not reported", "== UP", None, "HCCN (RoCE) port of the NPU")


# --- Performance probes ---------------------------------------------------------------------------
def _probe(ev: Evidence) -> dict[str, Any]:
    got = ev.get(PROBE)
    if got is None:
        level = ev.manifest.get("level", "?")
        raise Missing(skip(f"no probe results in the evidence (collected at level {level}; probes run at standard)"))
    if got.rc != 0:
        raise Missing(error(f"the probe exited {got.rc}: {got.err.strip()[-500:]}"))
    try:
        data: dict[str, Any] = json.loads(got.out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise Missing(error(f"the probe printed no JSON: {got.err.strip()[-300:]}")) from None
    if data.get("torch") is None:
        raise Missing(error("; ".join(data.get("errors", [])) or "no torch on the node"))
    return data


def _device_result(ev: Evidence, exp: Expectations, index: int | None) -> dict[str, Any]:
    if exp.kind is NodeKind.cpu or index is None:
        raise Missing(skip("CPU node: no accelerator to measure (perf.cpu_gemm and perf.cpu_membw measure the CPU)"))
    data = _probe(ev)
    want = "cuda" if exp.kind is NodeKind.nvidia else "npu"
    if data.get("device_kind") != want:
        raise Missing(failed(f"torch sees {data.get('device_kind')}", f"torch sees {want}", None,
                             f"torch {data.get('torch')} on the node cannot use the {exp.device_label.upper()}s "
                             f"({'; '.join(data.get('errors', []) + list(data.get('skipped', {}).values()))})"))
    for dev in data.get("devices", []):
        if dev.get("index") == index:
            if "error" in dev:
                raise Missing(error(f"probe on {want}:{index} failed: {dev['error']}"))
            return dict(dev)
    raise Missing(failed("absent", "present", None, f"torch sees no {want}:{index}"))


def _vs_peak(measured: float, peak: float, fraction: float, practical: float, unit: str, what: str) -> Outcome:
    floor = peak * fraction
    return judge(measured >= floor, round(measured, 2), f">= {floor:.1f}", unit,
                 f"{measured / peak:.0%} of {what} peak {peak:g}; {measured / practical:.0%} of the {practical:.0f} "
                 "healthy parts reach in practice", fraction_of_peak=round(measured / peak, 3),
                 fraction_of_practical=round(measured / practical, 3), peak=peak, practical=practical)


def perf_matmul_bf16(ev: Evidence, exp: Expectations, index: int | None) -> Outcome:
    dev, acc = _device_result(ev, exp, index), _acc(exp)
    return _vs_peak(dev["matmul_bf16_tflops"], acc.bf16_tflops, MATMUL_PEAK_FRACTION,
                    acc.bf16_tflops * acc.matmul_efficiency, "TFLOPS", "BF16 dense")


def perf_membw(ev: Evidence, exp: Expectations, index: int | None) -> Outcome:
    dev, acc = _device_result(ev, exp, index), _acc(exp)
    return _vs_peak(dev["membw_gbps"], acc.hbm_gbps, MEMBW_PEAK_FRACTION, acc.hbm_gbps * acc.hbm_efficiency,
                    "GB/s", "HBM")


def perf_h2d(ev: Evidence, exp: Expectations, index: int | None) -> Outcome:
    dev, acc = _device_result(ev, exp, index), _acc(exp)
    link = acc.pcie_gbps
    floor = link * H2D_LINK_FRACTION
    return judge(dev["h2d_gbps"] >= floor, dev["h2d_gbps"], f">= {floor:.1f}", "GB/s",
                 f"{dev['h2d_gbps'] / link:.0%} of the Gen{acc.pcie_gen} x{acc.pcie_width} link ({link:.1f} GB/s)")


def perf_allreduce(ev: Evidence, exp: Expectations) -> Outcome:
    if exp.kind is NodeKind.cpu:
        return skip("CPU node: no accelerators to all-reduce across")
    acc = _acc(exp)
    if exp.count < 2:
        return skip(f"{exp.count} device expected: an all-reduce needs two")
    data = _probe(ev)
    result = data.get("allreduce")
    if result is None:
        errors = [e for e in data.get("errors", []) if "all-reduce" in e]
        reason = data.get("skipped", {}).get("allreduce") or "; ".join(errors)
        return failed("not measured", f"over {exp.count} devices", None, reason or "the probe ran no all-reduce")
    practical = acc.allreduce_busbw_gbps
    floor = practical * ALLREDUCE_PRACTICAL_FRACTION
    return judge(result["busbw_gbps"] >= floor and result["n"] == exp.count, result["busbw_gbps"], f">= {floor:.0f}",
                 "GB/s busbw", f"over {result['n']} devices (algbw {result['algbw_gbps']} GB/s, busbw = algbw x "
                 f"2(n-1)/n); healthy {acc.interconnect} systems reach ~{practical:g}", **result)


def cpu_peak_gflops(cpuinfo: str, threads: int) -> tuple[float, str] | None:
    """Estimated FP32 peak: threads x clock x FLOPs/cycle of the widest FMA the flags announce. SMT threads share
    the FMA units, so this over-estimates; it serves only as a floor reference."""
    mhz = re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.MULTILINE)
    if not mhz:
        return None
    ghz = max(float(m) for m in mhz) / 1000
    flags = sysp.cpu_flags(cpuinfo)
    # Lower-bound FLOP/cycle per thread: one FMA unit of the widest vector width the flags announce (many
    # cores have two; SMT siblings share them), so the estimate is one any healthy core of that ISA exceeds.
    per_cycle, isa = (32, "AVX-512") if "avx512f" in flags else (16, "AVX2+FMA") if "fma" in flags else (4, "SSE")
    if "asimd" in flags:  # aarch64 NEON: one 128-bit FMA
        per_cycle, isa = 8, "NEON"
    how = f"{threads} threads x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({isa}, one FMA unit)"
    return threads * ghz * per_cycle, how


def perf_cpu_gemm(ev: Evidence, exp: Expectations) -> Outcome:
    cpu = _probe(ev).get("cpu")
    if not cpu:
        return error("the probe measured no CPU figures")
    peak = cpu_peak_gflops(item(ev, "cpuinfo", "/proc/cpuinfo").out, int(cpu["threads"]))
    if peak is None:
        return error("/proc/cpuinfo gives no clock to estimate a peak from")
    floor = peak[0] * CPU_GEMM_PEAK_FRACTION
    return judge(cpu["gemm_fp32_gflops"] >= floor, cpu["gemm_fp32_gflops"], f">= {floor:.1f}", "GFLOPS",
                 f"{cpu['gemm_fp32_gflops'] / peak[0]:.0%} of an estimated peak {peak[0]:.0f} ({peak[1]})",
                 estimated_peak=round(peak[0], 1))


def perf_cpu_membw(ev: Evidence, exp: Expectations) -> Outcome:
    cpu = _probe(ev).get("cpu")
    if not cpu:
        return error("the probe measured no CPU figures")
    return judge(cpu["membw_gbps"] >= CPU_MEMBW_FLOOR_GBPS, cpu["membw_gbps"], f">= {CPU_MEMBW_FLOOR_GBPS}", "GB/s",
                 "256 MiB copy (read + write), no catalog figure for host memory: sanity floor")


# --- Serving --------------------------------------------------------------------------------------
def _serving(ev: Evidence, exp: Expectations) -> dict[str, Any]:
    got = ev.get("serving")
    if got is None:
        if not exp.serving_url:
            raise Missing(skip("no llmrack_serving_url for this node: nothing serves here"))
        raise Missing(skip("serving is checked from the control machine during a live run, not from a dump"))
    data: dict[str, Any] = json.loads(got.out)
    if data.get("error"):
        raise Missing(failed("unreachable", "answers", None, f"{data.get('url')}: {data['error']}"))
    return data


def serving_ready(ev: Evidence, exp: Expectations) -> Outcome:
    data = _serving(ev, exp)
    status = data["ready"]["status"]
    body = data["ready"]["body"][:200]
    return judge(status == 200, status, "== 200", "HTTP status", f"GET {data['url']}/ready: {body}")


def serving_api_key(ev: Evidence, exp: Expectations) -> Outcome:
    data = _serving(ev, exp)
    if not exp.api_keys:
        return skip("the inventory sets no serving_api_keys: key enforcement cannot be tested")
    without, wrong, good = data["no_key"]["status"], data["wrong_key"]["status"], data["good_key"]["status"]
    ok = without == 401 and wrong == 401 and good == 200
    return judge(ok, f"no key {without}, wrong key {wrong}, valid key {good}", "401, 401, 200", "HTTP status",
                 "GET /v1/models")


def serving_completion(ev: Evidence, exp: Expectations) -> Outcome:
    data = _serving(ev, exp)
    comp = data["completion"]
    limit = float(exp.var("llmrack_validation_completion_seconds") or COMPLETION_SECONDS)
    if comp["status"] != 200:
        return failed(f"HTTP {comp['status']}", "HTTP 200", None, comp.get("body", "")[:300])
    tokens = comp.get("completion_tokens") or 0
    return judge(tokens > 0 and comp["seconds"] <= limit, round(comp["seconds"], 3), f"<= {limit:g}", "s",
                 f"{tokens} tokens from model {comp.get('model')!r}: {comp.get('text', '')[:80]!r}",
                 completion_tokens=tokens)
