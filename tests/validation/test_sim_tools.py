"""The lab's simulated accelerator tools (llmrack/lab/data/sim) answer everything the validation suite asks, so its
GPU/NPU checks judge a simulated node for real: a healthy sim board passes, each fault a hardware description
sets fails the check that should catch it, and nothing else.

No lab: the tools are laid out under a temporary root as their installers lay them out on a node
(LLMRACK_SIM_ROOT points the scripts there), and the suite's own collector gathers the evidence through
testinfra's local backend, exactly as it reads a node.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import testinfra  # type: ignore[import-untyped]

from llmrack.lab import sim
from llmrack.lab.state import Profile
from llmrack.validation import checks
from llmrack.validation.evidence import NVML_ITEMS, Evidence, gather
from llmrack.validation.expect import Expectations
from tests.unit.validation.conftest import expectations

ROOT = Path(__file__).resolve().parents[2]
SIM = sim.SIM_DIR
VERSIONS = sim.versions()
EXPORTER = ROOT / "ansible" / "roles" / "monitoring" / "files" / "llmrack-accelerator-exporter"

GPU_CHECKS = [checks.nvidia_sku, checks.nvidia_memory, checks.nvidia_persistence_mode, checks.nvidia_ecc_mode,
              checks.nvidia_ecc_uncorrectable, checks.nvidia_row_remap, checks.nvidia_throttle,
              checks.nvidia_pcie_link, checks.nvidia_nvlink]
NPU_CHECKS = [checks.ascend_health, checks.ascend_hbm, checks.ascend_firmware_version, checks.ascend_hccn_link]


def hardware(profile: str) -> dict[str, Any]:
    path = sim.hardware_file(Profile(profile))
    assert path is not None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _install(src: Path, dest: Path) -> None:
    # As the installers do (`install -m 0755`): the fixtures are not executable in git.
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(0o755)


def install(root: Path, hw: dict[str, Any]) -> Path:
    """What the simulated driver installers and `llmrack lab` put on a node of this hardware, under `root`."""
    (root / "etc" / "llmrack-sim").mkdir(parents=True)
    (root / "etc" / "llmrack-sim" / "hardware.json").write_text(json.dumps(hw))
    if hw.get("gpus"):
        _install(SIM / "nvidia-driver" / "payload" / "usr" / "bin" / "nvidia-smi", root / "usr" / "bin" / "nvidia-smi")
        (root / "var" / "lib" / "nvidia-sim").mkdir(parents=True)
        (root / "var" / "lib" / "nvidia-sim" / "driver-version").write_text(VERSIONS["nvidia-driver"] + "\n")
        # nvidia-persistenced's pid file, naming a live process (this one): persistence mode reads Enabled.
        (root / "var" / "run" / "nvidia-persistenced").mkdir(parents=True)
        (root / "var" / "run" / "nvidia-persistenced" / "nvidia-persistenced.pid").write_text(f"{os.getpid()}\n")
    if hw.get("npus"):
        tools = root / "usr" / "local" / "Ascend" / "driver" / "tools"
        (root / "usr" / "local" / "sbin").mkdir(parents=True)
        for tool in ("npu-smi", "hccn_tool"):
            _install(SIM / "ascend-driver" / "payload" / tool, tools / tool)
            (root / "usr" / "local" / "sbin" / tool).symlink_to(tools / tool)
        (tools.parent / "version.info").write_text(f"Version={VERSIONS['ascend-driver']}\n")
        (root / "usr" / "local" / "Ascend" / "firmware").mkdir(parents=True)
        (root / "usr" / "local" / "Ascend" / "firmware" / "version.info").write_text(
            f"Version={VERSIONS['ascend-firmware']}\n")
    return root


def env_for(root: Path) -> dict[str, str]:
    return {**os.environ, "LLMRACK_SIM_ROOT": str(root),
            "PATH": f"{root}/usr/local/sbin:{root}/usr/bin:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def node_evidence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hw: dict[str, Any], name: str) -> Evidence:
    """The suite's collector run on a simulated node (this machine, with the sim tools first on PATH)."""
    root = install(tmp_path / name, hw)
    for key, value in env_for(root).items():
        monkeypatch.setenv(key, value)
    ev = gather(testinfra.get_host("local://"), name, "quick", python=sys.executable)
    # The sim has no NVML library: the suite reads nvidia-smi, as it does on a node whose Python lacks pynvml.
    # (Dropped rather than left to fail, so a machine with a real GPU does not answer for the sim.)
    for item in NVML_ITEMS:
        ev.items.pop(item, None)
    return ev


def run_tool(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=env_for(root), capture_output=True, text=True, timeout=60, check=False)


def outcomes(ev: Evidence, exp: Expectations, per_device: list[checks.CheckFn]) -> dict[str, checks.Outcome]:
    out = {}
    for fn in per_device:
        for i in range(exp.count):
            out[f"{fn.__name__}[{i}]"] = checks.run(fn, ev, exp, i)
    return out


def not_passed(results: dict[str, checks.Outcome]) -> dict[str, str]:
    return {k: v.status for k, v in results.items() if v.status != "pass"}


@pytest.fixture
def a100() -> Expectations:
    return expectations("nvidia", "a100-80g", nvidia_driver_version=VERSIONS["nvidia-driver"])


@pytest.fixture
def ascend() -> Expectations:
    return expectations("ascend", "ascend-910b", ascend_driver_version=VERSIONS["ascend-driver"],
                        ascend_driver_firmware_version=VERSIONS["ascend-firmware"])


# --- NVIDIA --------------------------------------------------------------------------------------------------
def test_healthy_sim_a100_passes_every_gpu_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 a100: Expectations) -> None:
    ev = node_evidence(tmp_path, monkeypatch, hardware("sim-a100"), "sim-a100")
    # The full field list answered: no fallback to the basic fields (its rejection would be in .err).
    assert ev.items["nvidia-smi-query"].rc == 0 and not ev.items["nvidia-smi-query"].err
    for fn in (checks.nvidia_gpu_count, checks.nvidia_driver_version):
        assert checks.run(fn, ev, a100).status == "pass", fn.__name__
    results = outcomes(ev, a100, GPU_CHECKS)
    assert not_passed(results) == {}
    # Measured from the sim's answers, not defaulted by the checks.
    assert {results[f"{c}[5]"].measured for c in ("nvidia_ecc_mode", "nvidia_ecc_uncorrectable", "nvidia_row_remap",
                                                   "nvidia_throttle", "nvidia_pcie_link", "nvidia_nvlink")} == {
        "Enabled", 0, "none pending", "GpuIdle", "Gen4 x16", 12}


FAULTS: dict[int, dict[str, Any]] = {
    1: {"ecc_uncorrected_volatile": 3, "ecc_uncorrected_aggregate": 5},
    2: {"pcie_width_current": 8},
    3: {"nvlinks_down": [4, 7]},
    4: {"remapped_rows_uncorrectable": 1, "remapped_rows_pending": True},
    5: {"throttle_reasons": "0x0000000000000040", "temperature_c": 91},
    6: {"ecc_mode": "Disabled"},
    7: {"remapped_rows_uncorrectable": 512, "remapped_rows_failure": True},
}


def test_faulted_sim_a100_fails_exactly_the_matching_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            a100: Expectations) -> None:
    hw = copy.deepcopy(hardware("sim-a100"))
    for index, fault in FAULTS.items():
        hw["gpus"][index].update(fault)
    ev = node_evidence(tmp_path, monkeypatch, hw, "sim-a100-faulty")
    results = outcomes(ev, a100, GPU_CHECKS)
    assert not_passed(results) == {
        "nvidia_ecc_uncorrectable[1]": "fail", "nvidia_pcie_link[2]": "fail", "nvidia_nvlink[3]": "fail",
        "nvidia_row_remap[4]": "fail", "nvidia_throttle[5]": "fail", "nvidia_ecc_mode[6]": "fail",
        # ECC off: the driver counts nothing, so the uncorrectable check cannot measure (error, never pass).
        "nvidia_ecc_uncorrectable[6]": "error", "nvidia_row_remap[7]": "fail",
    }
    ecc = results["nvidia_ecc_uncorrectable[1]"]
    assert ecc.measured == 3 and "lifetime (aggregate): 5" in ecc.detail
    assert "x8" in results["nvidia_pcie_link[2]"].detail and results["nvidia_pcie_link[2]"].measured == "Gen4 x8"
    nvl = results["nvidia_nvlink[3]"]
    assert (nvl.measured, nvl.threshold, nvl.detail) == (10, "== 12", "inactive: 4, 7")
    remap, throttle = results["nvidia_row_remap[4]"], results["nvidia_throttle[5]"]
    assert remap.measured == "pending" and "reset the GPU" in remap.detail
    assert throttle.measured == "HwThermalSlowdown" and "0x40" in throttle.detail
    assert results["nvidia_ecc_mode[6]"].measured == "Disabled"
    assert "ECC off" in results["nvidia_ecc_uncorrectable[6]"].detail
    assert results["nvidia_row_remap[7]"].measured == "failure" and "RMA" in results["nvidia_row_remap[7]"].detail
    # The human-readable report agrees with the CSV answers.
    q = run_tool(tmp_path / "sim-a100-faulty", "nvidia-smi", "-q", "-i", "4").stdout
    assert "GPU 00000000:87:00.0" in q and "Remapping Failure Occurred        : No" in q
    assert [line.split(":")[1].strip() for line in q.splitlines() if line.strip().startswith("Pending")] == [
        "Enabled", "Yes"]


def test_sim_nvidia_smi_answers_roles_and_exporter_and_refuses_the_unknown(
        tmp_path: Path, a100: Expectations) -> None:
    root = install(tmp_path / "node", hardware("sim-a100"))
    # nvidia_driver / nvidia_fabricmanager roles: the version, then index,name,driver_version,persistence_mode.
    version = run_tool(root, "nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    assert version.stdout.splitlines() == [VERSIONS["nvidia-driver"]] * 8
    rows = run_tool(root, "nvidia-smi", "--query-gpu=index,name,driver_version,persistence_mode",
                    "--format=csv,noheader").stdout.splitlines()
    assert {tuple(r.split(", ")[1:]) for r in rows} == {("NVIDIA A100-SXM4-80GB", VERSIONS["nvidia-driver"], "Enabled")}
    # nccl_tuning / nvidia_fabricmanager roles read the NVLink matrix and the NIC legend.
    # Like the real tool, the NIC legend names only HCAs whose driver shows them in sysfs.
    topo = run_tool(root, "nvidia-smi", "topo", "-m").stdout
    assert "NV12" in topo and "NIC Legend" in topo and "mlx5" not in topo
    for hca in ("mlx5_0", "mlx5_1"):
        (root / "sys" / "class" / "infiniband" / hca).mkdir(parents=True)
    topo = run_tool(root, "nvidia-smi", "topo", "-m").stdout
    assert "NIC0: mlx5_0" in topo and "NIC1: mlx5_1" in topo and "mlx5_2" not in topo
    # The monitoring role's exporter, run as its timer runs it.
    prom = tmp_path / "accelerator.prom"
    subprocess.run([sys.executable, str(EXPORTER), "--tool", str(root / "usr" / "bin" / "nvidia-smi"),
                    "--out", str(prom), "--expected", "8"], env=env_for(root), check=True, timeout=60)
    text = prom.read_text()
    assert 'llmrack_accelerator_up{vendor="nvidia"} 1' in text
    assert 'llmrack_accelerator_count{vendor="nvidia"} 8' in text
    # Unknown fields and subcommands fail like the real tool (the collector's fallback keys on this message).
    bad = run_tool(root, "nvidia-smi", "--query-gpu=index,bogus.field", "--format=csv")
    assert bad.returncode == 2 and 'Field "bogus.field" is not a valid field to query.' in bad.stdout
    assert run_tool(root, "nvidia-smi", "nvlink", "-e").returncode != 0
    assert run_tool(root, "nvidia-smi", "-q", "-i", "8").returncode != 0


# --- Ascend --------------------------------------------------------------------------------------------------
def test_sim_ascend_healthy_then_a_down_link_and_a_sick_npu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            ascend: Expectations) -> None:
    ev = node_evidence(tmp_path, monkeypatch, hardware("sim-ascend"), "sim-ascend")
    # (ascend.driver_version reads /usr/local/Ascend/driver/version.info with cat, not a sim tool: the lab covers it.)
    assert checks.run(checks.ascend_npu_count, ev, ascend).measured == 8
    healthy = outcomes(ev, ascend, NPU_CHECKS)
    assert not_passed(healthy) == {}
    assert {healthy[f"ascend_hccn_link[{i}]"].measured for i in range(8)} == {"UP"}

    hw = copy.deepcopy(hardware("sim-ascend"))
    hw["npus"][4]["link_status"] = "DOWN"
    hw["npus"][2]["health"] = "Critical"
    bad = outcomes(node_evidence(tmp_path, monkeypatch, hw, "sim-ascend-faulty"), ascend, NPU_CHECKS)
    assert not_passed(bad) == {"ascend_hccn_link[4]": "fail", "ascend_health[2]": "fail"}
    assert bad["ascend_hccn_link[4]"].measured == "DOWN"
    assert "npu-smi health Critical" in bad["ascend_health[2]"].detail


def test_sim_hccn_tool_and_npu_smi_answer_like_the_real_tools(tmp_path: Path) -> None:
    root = install(tmp_path / "node", hardware("sim-ascend"))
    assert run_tool(root, "hccn_tool", "-i", "3", "-link", "-g").stdout == "link status: UP\n"
    ip = run_tool(root, "hccn_tool", "-i", "0", "-ip", "-g").stdout
    assert ip == "ipaddr:192.168.100.101\nnetmask:255.255.255.0\n"
    for argv, code in ((("-i", "0", "-speedx", "-g"), 1), ((), 1), (("-i", "9", "-link", "-g"), 255)):
        got = run_tool(root, "hccn_tool", *argv)
        assert got.returncode == code and got.stdout.strip(), argv
    # Installed where the real driver puts it, with the sbin link the collector's PATH finds.
    assert (root / "usr" / "local" / "sbin" / "hccn_tool").resolve() == (
        root / "usr" / "local" / "Ascend" / "driver" / "tools" / "hccn_tool")
    # Without the driver nothing answers.
    (root / "usr" / "local" / "Ascend" / "driver" / "version.info").unlink()
    assert run_tool(root, "hccn_tool", "-i", "0", "-link", "-g").returncode != 0
    # The monitoring exporter reads npu-smi through the sbin link.
    prom = tmp_path / "npu.prom"
    (root / "usr" / "local" / "Ascend" / "driver" / "version.info").write_text(f"Version={VERSIONS['ascend-driver']}\n")
    subprocess.run([sys.executable, str(EXPORTER), "--tool", str(root / "usr" / "local" / "sbin" / "npu-smi"),
                    "--out", str(prom), "--expected", "8"], env=env_for(root), check=True, timeout=60)
    assert 'llmrack_accelerator_count{vendor="ascend"} 8' in prom.read_text()

