"""Parsers on recorded-format outputs (tests/fixtures/validation/<scenario>/<item>.out)."""

from __future__ import annotations

import pytest

from llmrack.validation.parsers import ParseError
from llmrack.validation.parsers import ascend as asc
from llmrack.validation.parsers import nvidia as nv
from llmrack.validation.parsers import system as sysp
from tests.unit.validation.conftest import FIXTURES


def read(scenario: str, item: str) -> str:
    return (FIXTURES / scenario / f"{item}.out").read_text()


def test_query_csv_a100_healthy() -> None:
    gpus = nv.gpus(read("nvidia-smi-a100-hgx-healthy", "nvidia-smi-query"))
    assert [g.index for g in gpus] == list(range(8))
    first = gpus[0]
    assert first.name == "NVIDIA A100-SXM4-80GB"
    assert first.bus_id == "07:00"
    assert (first.driver_version, first.persistence_mode, first.ecc_mode) == ("535.129.03", "Enabled", "Enabled")
    assert (first.pcie_gen, first.pcie_gen_max, first.pcie_width, first.pcie_width_max) == (4, 4, 16, 16)
    assert first.memory_mib == 81920
    assert first.throttle_reasons == 0


def test_query_csv_handles_na_and_units() -> None:
    text = "index, memory.total [MiB], ecc.mode.current\n0, 46068, [N/A]\n"
    assert nv.query_csv(text) == [{"index": "0", "memory.total": "46068", "ecc.mode.current": None}]


def test_query_csv_rejects_other_text() -> None:
    with pytest.raises(ParseError):
        nv.query_csv("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n")


def test_xid79_gpu_missing_from_query() -> None:
    gpus = nv.gpus(read("nvidia-smi-a100-hgx-xid79", "nvidia-smi-query"))
    assert [g.index for g in gpus] == [0, 1, 2, 4, 5, 6, 7]


def test_remapped_rows_pending() -> None:
    rows = nv.remapped_rows(read("nvidia-smi-a100-hgx-row-remap-pending", "nvidia-smi-remapped-rows"))
    assert rows["90:00"].pending is True and rows["90:00"].uncorrectable == 2
    assert rows["07:00"].pending is False and rows["07:00"].failure is False


def test_nvlink_status_inactive_link() -> None:
    links = nv.nvlink_status(read("nvidia-smi-a100-hgx-nvlink-inactive", "nvidia-smi-nvlink"))
    assert len(links) == 8 and all(len(v) == 12 for v in links.values())
    assert links[6][4] is None
    assert links[6][3] == 25.0


def test_nvlink_status_h100_has_18_links() -> None:
    links = nv.nvlink_status(read("nvidia-smi-h100-hgx-healthy", "nvidia-smi-nvlink"))
    assert {len(v) for v in links.values()} == {18} and links[0][17] == 26.562


def test_xid_events_with_meaning() -> None:
    events = nv.xid_events(read("nvidia-smi-a100-hgx-xid79", "dmesg"))
    assert [(e.bus_id, e.code) for e in events] == [("4e:00", 79)]
    assert "fallen off the bus" in events[0].meaning and events[0].node_fault


def test_xid_application_faults_are_not_node_faults() -> None:
    events = nv.xid_events(read("nvidia-smi-a100-hgx-healthy", "dmesg"))
    assert {e.code for e in events} == {13} and not any(e.node_fault for e in events)


def test_unknown_xid_counts_as_node_fault() -> None:
    event = nv.xid_events("[1.0] NVRM: Xid (PCI:0000:07:00): 999, pid=1, name=x, something new")[0]
    assert event.node_fault and "catalog" in event.meaning


def test_throttle_names() -> None:
    assert nv.throttle_names(0x60) == [("SwThermalSlowdown", True), ("HwThermalSlowdown", True)]
    assert nv.throttle_names(0x1) == [("GpuIdle", False)]


def test_fabricmanager_version() -> None:
    assert nv.fabricmanager_version("Fabric Manager version is : 535.129.03\n") == "535.129.03"
    assert nv.fabricmanager_version("") is None


def test_npu_smi_info_healthy() -> None:
    version, npus = asc.npu_smi_info(read("npu-smi-910b-healthy", "npu-smi-info"))
    assert version == "23.0.3"
    assert [n.npu for n in npus] == list(range(8))
    assert {n.health for n in npus} == {"OK"} and {n.name for n in npus} == {"910B3"}
    assert npus[0].bus_id == "0000:C1:00.0" and npus[0].hbm_total_mb == 65536 and npus[0].hbm_used_mb == 3380


def test_npu_smi_info_unhealthy() -> None:
    _, npus = asc.npu_smi_info(read("npu-smi-910b-unhealthy", "npu-smi-info"))
    assert {n.npu: n.health for n in npus if n.health != "OK"} == {4: "Critical"}


def test_npu_smi_rejects_other_text() -> None:
    with pytest.raises(ParseError):
        asc.npu_smi_info("dcmi model initialized failed, because the device is used. ret is -8020\n")


def test_ascend_versions_and_links() -> None:
    assert asc.firmware_versions(read("npu-smi-910b-healthy", "npu-smi-board"))[7] == "7.1.0.5.220"
    assert asc.version_info(read("npu-smi-910b-healthy", "ascend-driver-version")) == "23.0.3"
    assert asc.version_info(read("npu-smi-910b-healthy", "ascend-cann-version")) == "7.0.0"
    assert asc.hccn_links(read("npu-smi-910b-unhealthy", "hccn-link"))[4] == "DOWN"


def test_system_parsers() -> None:
    sysctl = sysp.sysctl(read("nvidia-smi-a100-hgx-healthy", "sysctl"))
    assert sysctl["vm.swappiness"] == "1" and sysctl["net.ipv4.tcp_rmem"] == "4096 87380 134217728"
    assert sysp.cmdline("ro iommu=pt quiet")["iommu"] == "pt"
    assert sysp.cmdline("ro iommu=pt quiet")["quiet"] is None
    assert "nvidia" in sysp.modules(read("nvidia-smi-a100-hgx-healthy", "modules"))
    env = sysp.env_file('# c\nexport NCCL_DEBUG=WARN\nNCCL_SOCKET_IFNAME="bond0"\n')
    assert env == {"NCCL_DEBUG": "WARN", "NCCL_SOCKET_IFNAME": "bond0"}
    assert {"bond0", "lo", "ens10f0np0"} <= sysp.interfaces(read("nvidia-smi-a100-hgx-healthy", "ip-link"))
    states = sysp.unit_states(read("nvidia-smi-a100-hgx-fabricmanager-down", "systemctl"))
    assert states["nvidia-fabricmanager"].active == "failed"


def test_nccl_tests_ranks_are_found_in_output_that_mpirun_interleaved() -> None:
    # mpirun forwards each rank's output as it arrives: rank 9's line landed inside rank 0's header line.
    rank = "#  Rank {r:2d} Group  0 Pid {p:6d} on {h:>10} device {d:2d} [0x07] NVIDIA A100-SXM4-80GB"
    text = "\n".join([
        "# nThread 1 nGpus 1 minBytes 8388608 maxBytes 8388608 step: 2(factor) warmup iters: 5 iters: 20",
        "# Using dev" + rank.format(r=9, p=41, h="node2", d=1) + "ices",
        rank.format(r=0, p=40, h="node1", d=0),
        rank.format(r=0, p=40, h="node1", d=0),  # repeated: still one rank
        "     8388608       2097152     float     sum      -1    104.2   80.51  150.96      0    104.6   80.20  "
        "150.37      0",
        "# Out of bounds values : 0 OK",
    ])
    report = nv.nccl_tests(text)
    assert report.ranks == [(0, "node1", 0), (9, "node2", 1)]
    assert report.rows[0].busbw_out == 150.96 and report.out_of_bounds == 0
