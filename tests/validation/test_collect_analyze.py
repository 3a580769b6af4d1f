"""`validate collect` -> `validate analyze`: the same checks on a dump give what they gave live; recorded dumps
of broken boxes are judged against an inventory's expectations."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from tests.validation.conftest import DEPLOYMENT, FIXTURES, by_id, llmrack, report, write_inventory


@pytest.mark.slow
def test_collect_then_analyze_matches_live(tmp_path: Path) -> None:
    archive = tmp_path / "node.tar.gz"
    proc = llmrack("validate", "collect", "--local", "--out", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(archive)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"manifest.json", "uname.out", "uname.rc", "sysctl.out", "nvidia-smi-query.rc", "dmesg.out"} <= names

    live, offline = tmp_path / "live", tmp_path / "offline"
    rc_live = llmrack("validate", "--local", "--report", str(live)).returncode
    rc_offline = llmrack("validate", "analyze", str(archive), "--report", str(offline)).returncode
    assert rc_live == rc_offline
    got_live, got_offline = by_id(report(live)), by_id(report(offline))
    assert report(offline)["nodes"][next(iter(report(offline)["nodes"]))]["source"] == "dump"
    # One code path: every check judged the same, except serving (checked live from the control machine only).
    for cid, rec in got_live.items():
        if rec["check"].startswith("serving."):
            continue
        assert (got_offline[cid]["status"], got_offline[cid]["measured"]) == (rec["status"], rec["measured"]), cid


def test_collect_to_directory_then_analyze_directory(tmp_path: Path) -> None:
    out = tmp_path / "dump"
    assert llmrack("validate", "collect", "--local", "--out", str(out)).returncode == 0
    assert (out / "manifest.json").is_file() and (out / "cpuinfo.out").read_text()
    proc = llmrack("validate", "analyze", str(out), "--report", str(tmp_path / "r"))
    assert proc.returncode in (0, 1) and (tmp_path / "r" / "report.html").is_file()


def _inventory(tmp_path: Path) -> Path:
    hosts = {h: {"ansible_connection": "local"} for h in ("a100-node1", "a100-node2", "a100-node3", "ascend-node2")}
    hosts["ascend-node2"].update(llmrack_accelerator="ascend-910b", ascend_driver_version="23.0.3",
                                 ascend_driver_cann_version="7.0.0", ascend_driver_firmware_version="7.1.0.5.220")
    return write_inventory(tmp_path / "inv", hosts, {"nvidia_nodes": ["a100-node1", "a100-node2", "a100-node3"],
                                                     "ascend_nodes": ["ascend-node2"]},
                           DEPLOYMENT, {"nvidia_driver_version": "535.129.03"})


def test_analyze_recorded_dumps_against_inventory(tmp_path: Path) -> None:
    dumps = [FIXTURES / n for n in ("nvidia-smi-a100-hgx-healthy", "nvidia-smi-a100-hgx-xid79",
                                    "nvidia-smi-a100-hgx-row-remap-pending", "npu-smi-910b-unhealthy")]
    out = tmp_path / "r"
    proc = llmrack("validate", "analyze", *map(str, dumps), "--inventory", str(_inventory(tmp_path)),
                   "--level", "standard", "--report", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rep = report(out)
    assert set(rep["nodes"]) == {"a100-node1", "a100-node2", "a100-node3", "ascend-node2"}
    failed = {c["id"] for c in rep["checks"] if c["status"] in ("fail", "error")}
    healthy_box = [i for i in failed if i.endswith("[a100-node1]") or "[a100-node1-" in i]
    assert not healthy_box, [(c["id"], c.get("message")) for c in rep["checks"] if c["id"] in healthy_box]
    assert {"nvidia.gpu_count[a100-node2]", "nvidia.xid[a100-node2]", "nvidia.sku[a100-node2-gpu3]",
            "nvidia.row_remap[a100-node3-gpu5]", "nvidia.ecc_uncorrectable[a100-node3-gpu5]",
            "ascend.health[ascend-node2-npu4]", "ascend.hccn_link[ascend-node2-npu4]"} <= failed
    checks = by_id(rep)
    mm = checks["perf.matmul_bf16[a100-node1-gpu0]"]
    assert (mm["status"], mm["measured"], mm["threshold"], mm["unit"]) == ("pass", 268.4, ">= 218.4", "TFLOPS")
    assert checks["perf.matmul_bf16[a100-node2-gpu0]"]["status"] == "skip"  # quick dump: no probe, not passed
    assert "GPU has fallen off the bus" in checks["nvidia.xid[a100-node2]"]["detail"]
