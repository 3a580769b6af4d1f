"""Checks on recorded evidence: healthy boxes pass, each broken box fails the check that should catch it."""

from __future__ import annotations

from llmrack.validation import checks
from llmrack.validation.expect import Expectations
from tests.unit.validation.conftest import evidence, expectations, outcome

GPU_CHECKS = [checks.nvidia_sku, checks.nvidia_memory, checks.nvidia_persistence_mode, checks.nvidia_ecc_mode,
              checks.nvidia_ecc_uncorrectable, checks.nvidia_row_remap, checks.nvidia_gpu_xid, checks.nvidia_throttle,
              checks.nvidia_pcie_link, checks.nvidia_nvlink]
NODE_CHECKS = [checks.nvidia_gpu_count, checks.nvidia_driver_version, checks.nvidia_xid, checks.nvidia_fabricmanager,
               checks.os_nouveau_absent, checks.os_services, checks.os_containerd_runtime, checks.os_nccl_env]


def statuses(fixture: str, exp: Expectations) -> dict[str, str]:
    ev = evidence(fixture)
    out = {fn.__name__: checks.run(fn, ev, exp).status for fn in NODE_CHECKS}
    for fn in GPU_CHECKS:
        for i in range(exp.count):
            out[f"{fn.__name__}[{i}]"] = checks.run(fn, ev, exp, i).status
    return out


def not_passed(fixture: str, exp: Expectations) -> dict[str, str]:
    return {k: v for k, v in statuses(fixture, exp).items() if v != "pass"}


def test_a100_healthy_passes_everything(a100: Expectations) -> None:
    assert not_passed("nvidia-smi-a100-hgx-healthy", a100) == {}


def test_a100_healthy_reports_application_xids_without_failing(a100: Expectations) -> None:
    result = outcome(checks.nvidia_xid, "nvidia-smi-a100-hgx-healthy", a100)
    assert result.status == "pass" and result.measured == 0
    assert "XID 13 on GPU 0" in result.detail


def test_xid79_fails_count_xid_and_the_lost_gpu(a100: Expectations) -> None:
    bad = not_passed("nvidia-smi-a100-hgx-xid79", a100)
    assert bad.pop("nvidia_gpu_count") == "fail"
    assert bad.pop("nvidia_xid") == "fail"
    lost = {k: v for k, v in bad.items() if k.endswith("[3]")}
    assert set(lost.values()) == {"fail"} and len(lost) == len(GPU_CHECKS)
    # nvlink -s still lists GPU 3 (recorded before it fell off): only the count, XID and GPU 3 checks fail.
    assert {k for k in bad if not k.endswith("[3]")} == set()
    xid = outcome(checks.nvidia_xid, "nvidia-smi-a100-hgx-xid79", a100)
    assert "XID 79 on GPU 3: GPU has fallen off the bus" in xid.detail


def test_xid79_is_attributed_to_the_lost_gpu_by_bus_id(a100: Expectations) -> None:
    """GPU 3 (bus 4e:00) is missing from nvidia-smi; nvidia-smi numbers GPUs in PCI bus order, so the one missing
    index between 47:00 (GPU 2) and 87:00 (GPU 4) is the GPU the XID names. Its own row fails with the meaning."""
    lost = outcome(checks.nvidia_gpu_xid, "nvidia-smi-a100-hgx-xid79", a100, 3)
    assert lost.status == "fail" and lost.measured == 1
    assert lost.detail.startswith("XID 79 on GPU 3: GPU has fallen off the bus")
    assert lost.data["events"][0]["bus_id"] == "4e:00"
    others = {i: outcome(checks.nvidia_gpu_xid, "nvidia-smi-a100-hgx-xid79", a100, i).status for i in range(8)}
    assert others == {0: "pass", 1: "pass", 2: "pass", 3: "fail", 4: "pass", 5: "pass", 6: "pass", 7: "pass"}


def test_row_remap_pending_fails_remap_ecc_and_xid(a100: Expectations) -> None:
    assert not_passed("nvidia-smi-a100-hgx-row-remap-pending", a100) == {
        "nvidia_xid": "fail", "nvidia_ecc_uncorrectable[5]": "fail", "nvidia_row_remap[5]": "fail",
        "nvidia_gpu_xid[5]": "fail"}
    remap = outcome(checks.nvidia_row_remap, "nvidia-smi-a100-hgx-row-remap-pending", a100, 5)
    assert remap.measured == "pending" and "reset the GPU" in remap.detail
    # XID 63 is the remap itself: linked to the pending-remap check in both details, counted once (there).
    assert "XID 63 (nvidia.gpu_xid)" in remap.detail and remap.data["xids"] == [63]
    xid = outcome(checks.nvidia_xid, "nvidia-smi-a100-hgx-row-remap-pending", a100)
    assert xid.measured == 1 and "XID 94 on GPU 5" in xid.detail
    assert "XID 63 on GPU 5: ECC page retirement or row remapping recorded (reset to apply) (the same event as " \
           "nvidia.row_remap (remap pending))" in xid.detail
    gpu5 = outcome(checks.nvidia_gpu_xid, "nvidia-smi-a100-hgx-row-remap-pending", a100, 5)
    assert gpu5.measured == 1 and [e["code"] for e in gpu5.data["events"] if e["node_fault"]] == [94]


def test_pcie_downtrained_fails_only_that_link(a100: Expectations) -> None:
    assert not_passed("nvidia-smi-a100-hgx-pcie-downtrained", a100) == {"nvidia_pcie_link[2]": "fail"}
    link = outcome(checks.nvidia_pcie_link, "nvidia-smi-a100-hgx-pcie-downtrained", a100, 2)
    assert link.measured == "Gen4 x8" and "x8" in link.detail and "Gen3 under load" in link.detail


def test_nvlink_inactive_fails_link_and_xid74(a100: Expectations) -> None:
    assert not_passed("nvidia-smi-a100-hgx-nvlink-inactive", a100) == {
        "nvidia_xid": "fail", "nvidia_nvlink[6]": "fail", "nvidia_gpu_xid[6]": "fail"}
    link = outcome(checks.nvidia_nvlink, "nvidia-smi-a100-hgx-nvlink-inactive", a100, 6)
    assert (link.measured, link.threshold, link.detail) == (11, "== 12", "inactive: 4")


def test_fabricmanager_down_fails_fm_and_services(a100: Expectations) -> None:
    assert not_passed("nvidia-smi-a100-hgx-fabricmanager-down", a100) == {
        "nvidia_fabricmanager": "fail", "os_services": "fail"}


def test_fabricmanager_version_must_match_driver(a100: Expectations) -> None:
    ev = evidence("nvidia-smi-a100-hgx-fabricmanager-down")
    ev.items["systemctl"] = evidence("nvidia-smi-a100-hgx-healthy").items["systemctl"]
    result = checks.run(checks.nvidia_fabricmanager, ev, a100)
    assert result.status == "fail" and result.measured == "active, 535.104.12"


def test_wrong_driver_pin_fails() -> None:
    exp = expectations("nvidia", "a100-80g", nvidia_driver_version="550.54.15")
    result = outcome(checks.nvidia_driver_version, "nvidia-smi-a100-hgx-healthy", exp)
    assert (result.status, result.measured, result.threshold) == ("fail", "535.129.03", "== 550.54.15")


def test_no_driver_pin_skips_with_reason() -> None:
    exp = expectations("nvidia", "a100-80g")
    result = outcome(checks.nvidia_driver_version, "nvidia-smi-a100-hgx-healthy", exp)
    assert result.status == "skip" and "nvidia_driver_version" in result.detail


def test_wrong_sku_fails() -> None:
    exp = expectations("nvidia", "h100", nvidia_driver_version="535.129.03")
    result = outcome(checks.nvidia_sku, "nvidia-smi-a100-hgx-healthy", exp, 0)
    assert result.status == "fail" and result.measured == "NVIDIA A100-SXM4-80GB"


def test_h100_and_h200_healthy() -> None:
    for fixture, acc, drv in (("nvidia-smi-h100-hgx-healthy", "h100", "550.54.15"),
                              ("nvidia-smi-h200-hgx-healthy", "h200", "550.90.07")):
        exp = expectations("nvidia", acc, nvidia_driver_version=drv)
        assert not_passed(fixture, exp) == {}, fixture


def test_h100_thermal_slowdown_fails_throttle_and_matmul() -> None:
    exp = expectations("nvidia", "h100", nvidia_driver_version="550.54.15")
    assert not_passed("nvidia-smi-h100-hgx-thermal-slowdown", exp) == {"nvidia_throttle[1]": "fail"}
    thr = outcome(checks.nvidia_throttle, "nvidia-smi-h100-hgx-thermal-slowdown", exp, 1)
    assert thr.measured == "SwThermalSlowdown, HwThermalSlowdown"
    mm = outcome(checks.perf_matmul_bf16, "nvidia-smi-h100-hgx-thermal-slowdown", exp, 1)
    assert mm.status == "fail" and mm.measured == 402.7 and mm.threshold == ">= 692.3"
    assert outcome(checks.perf_matmul_bf16, "nvidia-smi-h100-hgx-thermal-slowdown", exp, 0).status == "pass"


def test_throttle_read_under_either_field_name() -> None:
    """Drivers since R535 print clocks_event_reasons.active (the old name is an alias): the recorded R550 box with
    a HW slowdown on GPU 6 fails exactly that GPU's throttle check, like the old-name H100 fixture above."""
    exp = expectations("nvidia", "a100-80g", nvidia_driver_version="550.90.07")
    fixture = "nvidia-smi-a100-hgx-hw-slowdown-event-reasons"
    assert "clocks_event_reasons.active" in evidence(fixture).items["nvidia-smi-query"].out.splitlines()[0]
    assert not_passed(fixture, exp) == {"nvidia_throttle[6]": "fail"}
    thr = outcome(checks.nvidia_throttle, fixture, exp, 6)
    assert thr.measured == "HwSlowdown" and thr.detail == "mask 0x8"


def test_pcie_only_idle_box() -> None:
    exp = expectations("nvidia", "l40s", nvidia_driver_version="535.129.03")
    bad = not_passed("nvidia-smi-l40s-pcie-idle-healthy", exp)
    # No NVLink and no NVSwitch on a PCIe part: skipped with the reason, never passed.
    assert bad == {"nvidia_fabricmanager": "skip", **{f"nvidia_nvlink[{i}]": "skip" for i in range(8)}}
    link = outcome(checks.nvidia_pcie_link, "nvidia-smi-l40s-pcie-idle-healthy", exp, 0)
    assert link.status == "pass" and "power-saving downshift" in link.detail


def test_probe_results_against_catalog(a100: Expectations) -> None:
    fx = "nvidia-smi-a100-hgx-healthy"
    mm = outcome(checks.perf_matmul_bf16, fx, a100, 0)
    assert (mm.status, mm.measured, mm.threshold, mm.unit) == ("pass", 268.4, ">= 218.4", "TFLOPS")
    assert mm.data["fraction_of_peak"] == 0.86
    bw = outcome(checks.perf_membw, fx, a100, 0)
    assert (bw.status, bw.threshold) == ("pass", ">= 1223.4")
    h2d = outcome(checks.perf_h2d, fx, a100, 0)
    assert h2d.status == "pass" and "Gen4 x16" in h2d.detail
    ar = outcome(checks.perf_allreduce, fx, a100)
    assert (ar.status, ar.measured, ar.threshold) == ("pass", 229.3, ">= 184")
    assert ar.data["algbw_gbps"] * 2 * 7 / 8 == ar.data["busbw_gbps"] or abs(ar.data["algbw_gbps"] * 1.75 - 229.3) < 0.1


def test_probes_absent_from_a_quick_dump_skip(a100: Expectations) -> None:
    result = outcome(checks.perf_matmul_bf16, "nvidia-smi-a100-hgx-xid79", a100, 0)
    assert result.status == "skip" and "level quick" in result.detail


def test_gpu_probe_on_cpu_node_skips_and_cpu_probe_measures() -> None:
    cpu = expectations("cpu")
    assert outcome(checks.perf_matmul_bf16, "nvidia-smi-a100-hgx-healthy", cpu, None).status == "skip"
    gemm = outcome(checks.perf_cpu_gemm, "nvidia-smi-a100-hgx-healthy", cpu)
    assert gemm.status == "pass" and gemm.measured == 1840.5 and "AVX2+FMA" in gemm.detail


def test_torch_without_gpu_on_gpu_node_fails(a100: Expectations) -> None:
    ev = evidence("nvidia-smi-a100-hgx-healthy")
    probe = ev.items["probe"]
    ev.items["probe"] = type(probe)("probe", 0, probe.out.replace('"device_kind": "cuda"', '"device_kind": "cpu"'))
    result = checks.run(checks.perf_matmul_bf16, ev, a100, 0)
    assert result.status == "fail" and "cannot use the GPUs" in result.detail


def test_ascend_healthy_and_unhealthy() -> None:
    exp = expectations("ascend", "ascend-910b", ascend_driver_version="23.0.3", ascend_driver_cann_version="7.0.0",
                       ascend_driver_firmware_version="7.1.0.5.220")
    for name, fixture in (("healthy", "npu-smi-910b-healthy"), ("unhealthy", "npu-smi-910b-unhealthy")):
        ev = evidence(fixture)
        got = {fn.__name__: checks.run(fn, ev, exp).status
               for fn in (checks.ascend_npu_count, checks.ascend_driver_version, checks.ascend_cann_version,
                          checks.os_containerd_runtime, checks.os_services, checks.os_nccl_env)}
        for fn in (checks.ascend_health, checks.ascend_hbm, checks.ascend_firmware_version, checks.ascend_hccn_link):
            got |= {f"{fn.__name__}[{i}]": checks.run(fn, ev, exp, i).status for i in range(8)}
        bad = {k: v for k, v in got.items() if v != "pass"}
        if name == "healthy":
            assert bad == {"os_nccl_env": "skip"}
        else:
            assert bad == {"os_nccl_env": "skip", "ascend_health[4]": "fail", "ascend_hccn_link[4]": "fail"}
    health = outcome(checks.ascend_health, "npu-smi-910b-unhealthy", exp, 4)
    assert health.measured == "Critical (910B3)"


def test_sysctl_and_cmdline_against_inventory() -> None:
    exp = expectations("nvidia", "a100-80g", common_sysctl={"vm.swappiness": 1, "kernel.numa_balancing": 1},
                       common_kernel_cmdline=["iommu=pt", "intel_iommu=on"])
    sysctl = outcome(checks.os_sysctl, "nvidia-smi-a100-hgx-healthy", exp)
    assert sysctl.status == "fail" and sysctl.measured == "1/2 as set" and "kernel.numa_balancing = 0" in sysctl.detail
    cmd = outcome(checks.os_kernel_cmdline, "nvidia-smi-a100-hgx-healthy", exp)
    assert cmd.status == "fail" and cmd.detail == "missing: intel_iommu=on"


def test_nccl_env_naming_missing_interface_fails(a100: Expectations) -> None:
    ev = evidence("nvidia-smi-a100-hgx-healthy")
    ev.items["nccl-env"] = type(ev.items["nccl-env"])("nccl-env", 0, "NCCL_SOCKET_IFNAME=eth9\nNCCL_IB_HCA=mlx5_12\n")
    result = checks.run(checks.os_nccl_env, ev, a100)
    assert result.status == "fail" and "'eth9'" in result.detail and "'mlx5_12'" in result.detail


def test_container_node_sysctl_judged_on_persisted_files_and_cmdline_skipped() -> None:
    exp = expectations("cpu", common_sysctl={"vm.swappiness": 0, "net.core.somaxconn": 4096},
                       common_kernel_cmdline=["iommu=pt"])
    ev = evidence("nvidia-smi-a100-hgx-healthy")
    ev.items["virt"] = type(ev.items["uname"])("virt", 0, "podman\n")
    ev.items["sysctl-files"] = type(ev.items["uname"])(
        "sysctl-files", 0, "# Ansible managed\nvm.swappiness = 0\nnet.core.somaxconn=4096\n")
    sysctl = checks.run(checks.os_sysctl, ev, exp)
    assert sysctl.status == "pass" and "podman container" in sysctl.detail  # runtime says swappiness 1
    assert checks.run(checks.os_kernel_cmdline, ev, exp).status == "skip"
    ev.items["virt"] = type(ev.items["uname"])("virt", 1, "none\n")  # bare metal / VM: the runtime values count
    assert checks.run(checks.os_sysctl, ev, exp).status == "fail"


def test_row_remap_is_judged_without_a_kernel_log(a100: Expectations) -> None:
    ev = evidence("nvidia-smi-a100-hgx-row-remap-pending")
    del ev.items["dmesg"]
    remap = checks.run(checks.nvidia_row_remap, ev, a100, 5)
    assert (remap.status, remap.measured, remap.data["xids"]) == ("fail", "pending", [])
    assert checks.run(checks.nvidia_gpu_xid, ev, a100, 5).status == "skip"  # no kernel log: nothing to attribute
