"""Performance checks over the probe's figures (standard level and up), measured on the node by its own torch,
judged against the catalog. On a CPU node the device checks skip with the reason and the CPU ones measure.

Every threshold is a named constant here or a catalog figure; docs/validation.md gives the source of each.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llmrack.catalog import Accelerator, Interconnect
from llmrack.validation.acceptance import GUIDE
from llmrack.validation.checks.base import Missing, Outcome, accelerator, error, failed, item, judge, skip
from llmrack.validation.checks.families import of_kind
from llmrack.validation.evidence import PROBE, Evidence
from llmrack.validation.expect import Expectations
from llmrack.validation.parsers import system as sysp

# The accelerator thresholds are the deployment's acceptance (exp.acceptance: llmrack.validation.acceptance, with
# the DeepSeek private-deployment selection guide's 70 % FLOPS, 60 % bandwidth and 2 us PCIe latency by default).
CPU_GEMM_PEAK_FRACTION = 0.15  # floor vs a lower-bound ISA peak estimate: catches starved/throttled CPUs only
CPU_MEMBW_FLOOR_GBPS = 2.0  # one DDR4 channel alone gives > 15 GB/s; below 2 the node is starved


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
    want = of_kind(exp.kind).torch_device
    if want is None or index is None:
        raise Missing(skip("CPU node: no accelerator to measure (perf.cpu_gemm and perf.cpu_membw measure the CPU)"))
    data = _probe(ev)
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


def _rule(exp: Expectations, name: str) -> str:
    """Where a threshold came from, for the detail: the guide's default or the deployment's own."""
    source = exp.source(name)
    return f"{GUIDE}'s rule" if source == "llmrack's default" else f"set by {source}"


def _vs_peak(measured: float, peak: float, fraction: float, practical: float, unit: str, what: str,
             rule: str) -> Outcome:
    floor = peak * fraction
    return judge(measured >= floor, round(measured, 2), f">= {floor:.1f}", unit,
                 f"{measured / peak:.0%} of {what} peak {peak:g} (want {fraction:.0%}: {rule}); "
                 f"{measured / practical:.0%} of the {practical:.0f} healthy parts reach in practice",
                 fraction_of_peak=round(measured / peak, 3),
                 fraction_of_practical=round(measured / practical, 3), peak=peak, practical=practical)


def perf_matmul_bf16(ev: Evidence, exp: Expectations, index: int | None) -> Outcome:
    dev, acc = _device_result(ev, exp, index), accelerator(exp)
    return _vs_peak(dev["matmul_bf16_tflops"], acc.bf16_tflops, exp.acceptance.matmul_peak_fraction,
                    acc.bf16_tflops * acc.matmul_efficiency, "TFLOPS", "BF16 dense",
                    _rule(exp, "matmul_peak_fraction"))


def perf_membw(ev: Evidence, exp: Expectations, index: int | None) -> Outcome:
    dev, acc = _device_result(ev, exp, index), accelerator(exp)
    return _vs_peak(dev["membw_gbps"], acc.hbm_gbps, exp.acceptance.membw_peak_fraction,
                    acc.hbm_gbps * acc.hbm_efficiency, "GB/s", "HBM", _rule(exp, "membw_peak_fraction"))


def perf_h2d(ev: Evidence, exp: Expectations, index: int | None) -> Outcome:
    dev, acc = _device_result(ev, exp, index), accelerator(exp)
    link = acc.pcie_gbps
    floor = link * exp.acceptance.h2d_link_fraction
    return judge(dev["h2d_gbps"] >= floor, dev["h2d_gbps"], f">= {floor:.1f}", "GB/s",
                 f"{dev['h2d_gbps'] / link:.0%} of the Gen{acc.pcie_gen} x{acc.pcie_width} link ({link:.1f} GB/s)")


def _between_devices(ev: Evidence, exp: Expectations, what: str, needs: str) -> tuple[Accelerator, dict[str, Any]]:
    """The accelerator and the probe's results for a check across devices; Missing(skip) where there is no pair."""
    if of_kind(exp.kind).torch_device is None:
        raise Missing(skip(f"CPU node: no accelerators to {what}"))
    if exp.count < 2:
        raise Missing(skip(f"{exp.count} device expected: {needs} two"))
    return accelerator(exp), _probe(ev)


def perf_allreduce(ev: Evidence, exp: Expectations) -> Outcome:
    acc, data = _between_devices(ev, exp, "all-reduce across", "an all-reduce needs")
    result = data.get("allreduce")
    if result is None:
        errors = [e for e in data.get("errors", []) if "all-reduce" in e]
        reason = data.get("skipped", {}).get("allreduce") or "; ".join(errors)
        return failed("not measured", f"over {exp.count} devices", None, reason or "the probe ran no all-reduce")
    practical = acc.allreduce_busbw_gbps
    floor = practical * exp.acceptance.allreduce_practical_fraction
    return judge(result["busbw_gbps"] >= floor and result["n"] == exp.count, result["busbw_gbps"], f">= {floor:.0f}",
                 "GB/s busbw", f"over {result['n']} devices (algbw {result['algbw_gbps']} GB/s, busbw = algbw x "
                 f"2(n-1)/n); healthy {acc.interconnect} systems reach ~{practical:g}", **result)


def perf_pcie_latency(ev: Evidence, exp: Expectations, index: int | None) -> Outcome:
    """Host-to-device latency of a small copy: per copy, from N queued copies of a pinned 1-element tensor timed
    with device events (the stream held until all are queued, as CUDA's p2pBandwidthLatencyTest does), against the
    guide's 2 us; the CPU-side round trip (copy + synchronize) is reported beside it."""
    dev = _device_result(ev, exp, index)
    lat = dev.get("h2d_latency_us")
    if lat is None:
        return skip(dev.get("latency_error") or "the probe measured no host-to-device latency (an older probe)")
    limit = exp.acceptance.pcie_latency_us
    return judge(lat <= limit, lat, f"<= {limit:g}", "us",
                 f"per copy, {dev.get('latency_copies')} copies timed with device events "
                 f"({dev.get('latency_method')}); CPU round trip {dev.get('h2d_roundtrip_us')} us; "
                 f"bound: {_rule(exp, 'pcie_latency_us')}", roundtrip_us=dev.get("h2d_roundtrip_us"))


def perf_p2p_latency(ev: Evidence, exp: Expectations) -> Outcome:
    """Device-to-device small-copy latency for every pair, against the bound of the catalog's link kind."""
    acc, data = _between_devices(ev, exp, "copy between", "peer copies need")
    pairs = data.get("p2p")
    if pairs is None:
        return skip(data.get("skipped", {}).get("p2p") or "the probe measured no peer latency (an older probe)")
    fast = acc.interconnect is not Interconnect.pcie
    name = "p2p_latency_us_nvlink" if fast else "p2p_latency_us_pcie"
    limit = getattr(exp.acceptance, name)
    measured = [p for p in pairs if "latency_us" in p]
    errors = [f"{p['src']}->{p['dst']}: {p['error']}" for p in pairs if "error" in p]
    slow = [f"{p['src']}->{p['dst']} {p['latency_us']} us" for p in measured if p["latency_us"] > limit]
    if not measured:
        return error("no device pair was measured: " + "; ".join(errors))
    worst = max(p["latency_us"] for p in measured)
    detail = f"{len(measured)} pairs over {acc.interconnect}; bound {name} ({_rule(exp, name)})"
    detail += (f"; over: {', '.join(slow)}" if slow else "") + (f"; failed: {'; '.join(errors)}" if errors else "")
    return judge(not slow and not errors, worst, f"<= {limit:g}", "us (worst pair)", detail, pairs=pairs)


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
