"""The DeepSeek private-deployment selection guide's (2025-09-15) sizing and performance claims, each computed
from the catalog and the planner: what it says, llmrack's figure, whether they agree, and why.

`llmrack plan --guide-claims` prints them; docs/planning.md carries the same table, and a test keeps the two equal.
The guide itself is in Chinese; its claims are paraphrased here, not quoted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from llmrack import catalog
from llmrack.catalog import GIB
from llmrack.dtypes import WeightsDType
from llmrack.plan import DEFAULT_HEADROOM, Plan, PlanRequest, plan
from llmrack.validation.acceptance import GUIDE, Acceptance

Verdict = Literal["agrees", "partly", "disagrees", "adopted", "not checked here"]
CONTEXT = 2048  # the classic models' own context; the guide names none


@dataclass(frozen=True)
class Claim:
    claim: str
    figure: str
    verdict: Verdict
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _plan(model: str, acc: str, dtype: WeightsDType = WeightsDType.fp16, **kw: Any) -> Plan:
    req = PlanRequest(model_name=model, arch=catalog.model(model).arch, context=CONTEXT, weights_dtype=dtype, **kw)
    return plan(req, catalog.accelerator(acc))


def _fits(p: Plan) -> str:
    mem = p.memory_per_device
    return (f"{p.count} x {p.accelerator.name}, TP {p.tensor_parallel}: {mem.weights_bytes / GIB:.1f} GiB weights "
            f"per device, {p.max_concurrent_sequences} sequences of {p.context} tokens, "
            f"{'within' if p.within_headroom else 'eating'} the {p.headroom:.0%} headroom")


def claims() -> list[Claim]:
    out: list[Claim] = []

    p13 = _plan("llama-2-13b", "a100-80g")
    out.append(Claim("13B parameters load whole on one A100 80 GB", _fits(p13),
                     "agrees" if p13.fits and p13.count == 1 else "disagrees",
                     f"FP16 weights of Llama-2-13B take {p13.weights_bytes / GIB:.0f} GiB of the "
                     f"{p13.memory_per_device.usable_bytes / GIB:.0f} GiB usable"))

    p175 = _plan("opt-175b", "a100-80g")
    on40 = _plan("opt-175b", "a100-40g", max_nodes=1)
    on40_int8 = _plan("opt-175b", "a100-40g", WeightsDType.int8, max_nodes=1)
    out.append(Claim("175B needs an 8-card NVLink A100 cluster", _fits(p175),
                     "agrees" if p175.fits and p175.count == 8 and p175.nodes == 1 else "disagrees",
                     f"OPT-175B (GPT-3's shape) in FP16: {p175.weights_bytes / GIB:.0f} GiB of weights need TP 8 on "
                     f"80 GB parts; on one node of 8 x A100 40 GB FP16 {'fits' if on40.fits else 'does not fit'}, "
                     f"INT8 {'fits' if on40_int8.fits else 'does not'}"))

    fp16, int8 = _plan("opt-175b", "a100-80g"), _plan("opt-175b", "a100-80g", WeightsDType.int8)
    ratio = int8.weights_bytes / fp16.weights_bytes
    out.append(Claim("INT8 quantisation cuts memory use by 50 % against FP16",
                     f"weights {int8.weights_bytes / GIB:.1f} vs {fp16.weights_bytes / GIB:.1f} GiB "
                     f"({1 - ratio:.0%} less)", "agrees" if abs(ratio - 0.5) < 0.01 else "disagrees",
                     "for the weights exactly; KV cache (FP16 either way) and runtime memory do not shrink"))

    small = [_plan(m, acc) for acc in ("a100-40g", "a100-80g") for m in ("deepseek-r1-distill-qwen-7b",
                                                                          "llama-2-13b")]
    single = [p for p in small if p.fits and p.count == 1]
    eaten = [f"{p.model.name} on {p.accelerator.name}" for p in single if not p.within_headroom]
    few = [p for p in single if p.max_concurrent_sequences < 4]
    out.append(Claim("Entry tier: one A100 (40 or 80 GB) serves 7B-13B models",
                     f"{len(single)} of 4 (7B, 13B on 40 and 80 GB) fit one card"
                     + (f"; {', '.join(eaten)} only by eating the headroom" if eaten else ""),
                     "agrees" if len(single) == 4 and not eaten and not few else
                     "partly" if len(single) == 4 else "disagrees",
                     f"13B in FP16 on a 40 GB card holds {small[1].max_concurrent_sequences} sequence(s) of "
                     f"{CONTEXT} tokens with 20 % kept free: it loads, but serves few users"))

    a100, ascend = catalog.accelerator("a100-80g"), catalog.accelerator("ascend-910b")
    d_a = _plan("deepseek-r1-distill-qwen-7b", "a100-80g").decode_tokens_per_s_upper_bound
    d_n = _plan("deepseek-r1-distill-qwen-7b", "ascend-910b").decode_tokens_per_s_upper_bound
    out.append(Claim("Ascend 910B reaches about 80 % of an A100's performance",
                     f"BF16 peak {ascend.bf16_tflops / a100.bf16_tflops:.0%}, HBM bandwidth "
                     f"{ascend.hbm_gbps / a100.hbm_gbps:.0%}, decode bound (R1-distill-Qwen-7B) {d_n / d_a:.0%} "
                     "of A100 80 GB", "agrees" if 0.7 <= d_n / d_a <= 0.9 else "partly",
                     "decode is bandwidth-bound: 1.6 vs 2.0 TB/s; compute is at par; catalog figures for the 910B "
                     "are estimates"))
    price = ascend.price_usd / a100.price_usd
    out.append(Claim("... at about 30 % lower cost", f"list price {ascend.price_usd:,.0f} vs {a100.price_usd:,.0f} "
                     f"USD ({1 - price:.0%} lower)", "agrees" if 0.2 <= 1 - price <= 0.4 else "disagrees",
                     "catalog list prices (estimates for the 910B); override with --price"))

    one, eight = a100.price_usd, 8 * a100.price_usd
    out.append(Claim("One A100 costs about USD 15,000; an 8-card NVLink cluster about USD 120,000",
                     f"catalog a100-80g: {one:,.0f}; 8 cards: {eight:,.0f} (GPUs only)",
                     "agrees" if one == 15_000 else "partly",
                     "the catalog's list price; servers, NVSwitch boards and networking come on top"))

    acc = Acceptance()
    eff = {n: catalog.accelerator(n).matmul_efficiency for n in ("a100-80g", "h100", "ascend-910b")}
    tight = [n for n, e in eff.items() if e <= acc.matmul_peak_fraction]
    out.append(Claim("FLOPS utilisation should stay at or above 70 %",
                     "perf.matmul_bf16 default: >= "
                     f"{acc.matmul_peak_fraction:.0%} of peak; catalog practical "
                     + ", ".join(f"{n} {e:.0%}" for n, e in eff.items()), "adopted",
                     "a node below what healthy parts reach on large BF16 GEMMs is sick"
                     + (f"; but {', '.join(tight)} reach only the bound itself in practice, so noise can fail a "
                        "healthy one: lower validation.acceptance.matmul_peak_fraction there" if tight else "")))
    hbm = {n: catalog.accelerator(n).hbm_efficiency for n in ("a100-80g", "h100", "ascend-910b")}
    out.append(Claim("Memory bandwidth utilisation should reach 60 % in FP16",
                     f"perf.membw default: >= {acc.membw_peak_fraction:.0%} of peak; catalog practical "
                     + ", ".join(f"{n} {e:.0%}" for n, e in hbm.items()), "adopted",
                     "a device-to-device copy reaches 80-90 % on healthy HBM; "
                     "per deployment: validation.acceptance.membw_peak_fraction"))
    out.append(Claim("PCIe Gen4 latency should stay within 2 us", f"perf.pcie_latency default: <= "
                     f"{acc.pcie_latency_us:g} us per host-to-device small copy", "not checked here",
                     "a measurement, not a sizing fact: the standard level's probe measures it on the node; no GPU "
                     "figure has been recorded yet (docs/validation.md)"))
    out.append(Claim("Keep 20 % hardware headroom for growth", f"planner default --headroom {DEFAULT_HEADROOM:g}",
                     "adopted", "the plan keeps 20 % of usable memory and of a throughput target unused and warns "
                     "when a layout fits only by eating it"))
    return out


def markdown_table(rows: list[Claim] | None = None) -> str:
    rows = claims() if rows is None else rows
    lines = ["| the guide says | llmrack's figure | verdict | why |", "| --- | --- | --- | --- |"]
    lines += [f"| {c.claim} | {c.figure} | {c.verdict} | {c.why} |" for c in rows]
    return "\n".join(lines)


__all__ = ["GUIDE", "Claim", "claims", "markdown_table"]
