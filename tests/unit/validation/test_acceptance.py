"""Acceptance thresholds and pinned expectations from the spec, the inventory and --expect; the latency checks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmrack.errors import LlmrackError, UsageError
from llmrack.spec import SpecError, parse_spec
from llmrack.validation import checks, expect
from llmrack.validation.evidence import PROBE, Evidence, Item
from llmrack.validation.plugin import parse_expect
from tests.unit.validation.conftest import evidence, expectations

SPEC = {"name": "d", "environment": "dev", "model": {"name": "deepseek-r1-distill-qwen-7b", "source": "/m"},
        "accelerator": "a100-80g", "serving": {"max_model_len": 4096, "max_num_seqs": 8}}


def with_probe(fixture: str, change: Any) -> Evidence:
    """A recorded dump whose probe answer is edited by `change(data)`: the probe's own output format."""
    ev = evidence(fixture)
    data = json.loads(ev.items[PROBE].out.strip().splitlines()[-1])
    change(data)
    ev.items[PROBE] = Item(PROBE, 0, json.dumps(data))
    return ev


def latencies(data: dict[str, Any], h2d: float = 1.6, p2p: float = 2.1) -> None:
    for dev in data["devices"]:
        dev.update(h2d_latency_us=h2d, h2d_roundtrip_us=9.8, latency_copies=100,
                   latency_method="stream held by a spin kernel")
    n = len(data["devices"])
    data["p2p"] = [{"src": i, "dst": j, "peer_access": True, "latency_us": p2p} for i in range(n)
                   for j in range(i + 1, n)]


def test_pcie_latency_against_the_guides_2us() -> None:
    exp = expectations("nvidia", "a100-80g")
    good = checks.run(checks.perf_pcie_latency, with_probe("nvidia-smi-a100-hgx-healthy", latencies), exp, 0)
    assert (good.status, good.measured, good.threshold, good.unit) == ("pass", 1.6, "<= 2", "us")
    assert "DeepSeek private-deployment selection guide (2025-09-15)'s rule" in good.detail
    assert "CPU round trip 9.8 us" in good.detail
    slow = with_probe("nvidia-smi-a100-hgx-healthy", lambda d: latencies(d, h2d=4.4))
    assert checks.run(checks.perf_pcie_latency, slow, exp, 0).status == "fail"


def test_p2p_latency_bound_follows_the_catalogs_link() -> None:
    nvlink = expectations("nvidia", "a100-80g")
    ev = with_probe("nvidia-smi-a100-hgx-healthy", lambda d: latencies(d, p2p=4.0))
    out = checks.run(checks.perf_p2p_latency, ev, nvlink)
    assert (out.status, out.measured, out.threshold) == ("fail", 4.0, "<= 3")
    assert "28 pairs over nvlink" in out.detail and "p2p_latency_us_nvlink" in out.detail
    # A PCIe part (the catalog's L40S) is held to the PCIe bound: the same 4 us is fine there.
    pcie = expectations("nvidia", "l40s")
    out = checks.run(checks.perf_p2p_latency, ev, pcie)
    assert (out.status, out.threshold) == ("pass", "<= 25") and "p2p_latency_us_pcie" in out.detail


def test_latency_checks_skip_with_the_reason() -> None:
    exp = expectations("nvidia", "a100-80g")
    old = checks.run(checks.perf_pcie_latency, evidence("nvidia-smi-a100-hgx-healthy"), exp, 0)
    assert old.status == "skip" and "older probe" in old.detail
    cpu = expectations("cpu")
    assert "CPU node" in checks.run(checks.perf_pcie_latency, evidence("nvidia-smi-a100-hgx-healthy"), cpu,
                                    None).detail
    assert "CPU node" in checks.run(checks.perf_p2p_latency, evidence("nvidia-smi-a100-hgx-healthy"), cpu).detail


def test_thresholds_from_spec_inventory_and_command_line_name_their_source() -> None:
    spec = parse_spec({**SPEC, "validation": {"acceptance": {"matmul_peak_fraction": 0.9}}}, "s.yaml")
    hv = {"group_names": ["nvidia_nodes"], "llmrack_validation_acceptance": {"membw_peak_fraction": 0.95}}
    exp = expect.build("n", hv, spec=spec, where="the inventory inv/")
    assert exp.acceptance.matmul_peak_fraction == 0.9 and exp.acceptance.membw_peak_fraction == 0.95
    ev = evidence("nvidia-smi-a100-hgx-healthy")
    mm = checks.run(checks.perf_matmul_bf16, ev, exp, 0)
    assert mm.status == "fail" and "set by the spec's validation.acceptance" in mm.detail
    bw = checks.run(checks.perf_membw, ev, exp, 0)
    assert "set by the inventory inv/: llmrack_validation_acceptance" in bw.detail
    pinned = expect.build("n", hv, spec=spec, where="the inventory inv/",
                          overrides={"matmul_peak_fraction": 0.5, "nvidia_driver_version": "535.129.03"})
    mm = checks.run(checks.perf_matmul_bf16, ev, pinned, 0)
    assert mm.status == "pass" and "set by --expect" in mm.detail
    drv = checks.run(checks.nvidia_driver_version, ev, pinned)
    assert drv.status == "pass" and drv.detail == "pinned by --expect"
    with pytest.raises(UsageError, match="matmul_peak_fraction"):
        expect.build("n", hv, overrides={"matmul_peak_fraction": 7})


def test_driver_pin_from_the_spec_and_skip_messages_name_the_real_sources() -> None:
    ev = evidence("nvidia-smi-a100-hgx-healthy")
    spec = parse_spec({**SPEC, "validation": {"expect": {"nvidia_driver_version": "550.90.07"}}}, "s.yaml")
    exp = expect.build("n", {}, spec=spec, kind=expect.NodeKind.nvidia, where="command line")
    drv = checks.run(checks.nvidia_driver_version, ev, exp)
    assert (drv.status, drv.threshold, drv.detail) == ("fail", "== 550.90.07", "pinned by the spec's validation.expect")
    # --spec alone: the message speaks of the spec (and how to pin), not of an inventory that was never read.
    bare = expect.build("n", {}, spec=parse_spec(SPEC, "s.yaml"), kind=expect.NodeKind.nvidia, where="command line")
    skip = checks.run(checks.nvidia_driver_version, ev, bare)
    assert skip.status == "skip"
    assert skip.detail.startswith("the spec's validation.expect does not pin nvidia_driver_version: set it with")
    assert "--expect nvidia_driver_version=VALUE" in skip.detail and "the inventory pins" not in skip.detail
    inv = expect.build("n", {"group_names": ["nvidia_nodes"]}, spec=parse_spec(SPEC, "s.yaml"),
                       where="the inventory inv/", origin={})
    assert checks.run(checks.nvidia_driver_version, ev, inv).detail.startswith(
        "neither the inventory inv/ nor the spec's validation.expect pins nvidia_driver_version")


def test_expect_option_and_spec_section_reject_unknown_names() -> None:
    assert parse_expect(["nvidia_driver_version=550.90", "common_sysctl={vm.swappiness: 10}",
                         "matmul_peak_fraction=0.75"]) == {
        "nvidia_driver_version": "550.90", "common_sysctl": {"vm.swappiness": 10}, "matmul_peak_fraction": 0.75}
    with pytest.raises(LlmrackError, match="did you mean nvidia_driver_version"):
        parse_expect(["nvidia_driver_verison=1"])
    with pytest.raises(LlmrackError, match="expected NAME=VALUE"):
        parse_expect(["nvidia_driver_version"])
    with pytest.raises(SpecError, match=r"validation\.expect.*did you mean ascend_driver_version"):
        parse_spec({**SPEC, "validation": {"expect": {"ascend_drivr_version": "x"}}}, "s.yaml")
    with pytest.raises(SpecError, match=r"acceptance threshold: set it under validation\.acceptance"):
        parse_spec({**SPEC, "validation": {"expect": {"pcie_latency_us": 3}}}, "s.yaml")
