"""The NVML reader prints what nvidia-smi prints, so the same parser and checks read either source.

NVML itself needs a GPU driver; here a small object stands in for the pynvml module (third-party, not ours),
answering as NVML does on an A100 with one unsupported call."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from llmrack.validation import checks, gpu_nvml
from llmrack.validation.evidence import Item
from llmrack.validation.parsers import nvidia as nv
from tests.unit.validation.conftest import evidence, expectations


class NVMLError(Exception):
    pass


def fake_nvml(pending: bool = False) -> Any:
    def not_supported(*_: Any) -> Any:
        raise NVMLError("Not Supported")

    return SimpleNamespace(
        NVMLError=NVMLError, NVML_MEMORY_ERROR_TYPE_UNCORRECTED=1, NVML_VOLATILE_ECC=0, NVML_AGGREGATE_ECC=1,
        NVML_TEMPERATURE_GPU=0,
        nvmlSystemGetDriverVersion=lambda: "535.129.03",
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetPciInfo=lambda h: SimpleNamespace(busId=["00000000:07:00.0", "00000000:0F:00.0"][h].encode()),
        nvmlDeviceGetName=lambda h: "NVIDIA A100-SXM4-80GB",
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}",
        nvmlDeviceGetPersistenceMode=lambda h: 1,
        nvmlDeviceGetEccMode=lambda h: (1, 1),
        nvmlDeviceGetTotalEccErrors=lambda h, kind, counter: 0,
        nvmlDeviceGetCurrPcieLinkGeneration=lambda h: 4,
        nvmlDeviceGetMaxPcieLinkGeneration=lambda h: 4,
        nvmlDeviceGetCurrPcieLinkWidth=lambda h: 16 if h == 0 else 8,
        nvmlDeviceGetMaxPcieLinkWidth=lambda h: 16,
        nvmlDeviceGetCurrentClocksThrottleReasons=lambda h: 0x1,
        nvmlDeviceGetPerformanceState=lambda h: 0,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=81920 * 1024 * 1024),
        nvmlDeviceGetTemperature=lambda h, sensor: 31,
        nvmlDeviceGetPowerUsage=not_supported,
        nvmlDeviceGetRemappedRows=lambda h: (0, 1 if pending and h == 1 else 0, pending and h == 1, False),
    )


def test_nvml_rows_parse_like_nvidia_smi() -> None:
    nvml = fake_nvml()
    text = gpu_nvml.render(gpu_nvml.QUERY_FIELDS, gpu_nvml.query_rows(nvml))
    assert text.splitlines()[0].startswith("index, pci.bus_id, name, uuid, driver_version")
    gpus = nv.gpus(text)
    assert [(g.index, g.bus_id, g.pcie_width, g.memory_mib, g.throttle_reasons) for g in gpus] == [
        (0, "07:00", 16, 81920, 1), (1, "0f:00", 8, 81920, 1)]
    assert gpus[0].persistence_mode == "Enabled" and gpus[0].ecc_mode == "Enabled"
    assert text.splitlines()[1].endswith(", [N/A]")  # power.draw unsupported, as nvidia-smi shows it


def test_checks_prefer_nvml_over_nvidia_smi() -> None:
    exp = expectations("nvidia", "a100-80g")
    ev = evidence("nvidia-smi-a100-hgx-healthy")  # nvidia-smi says every link is x16
    nvml = fake_nvml(pending=True)
    ev.items["nvml-query"] = Item("nvml-query", 0, gpu_nvml.render(gpu_nvml.QUERY_FIELDS, gpu_nvml.query_rows(nvml)))
    ev.items["nvml-remapped-rows"] = Item(
        "nvml-remapped-rows", 0, gpu_nvml.render(gpu_nvml.REMAP_FIELDS, gpu_nvml.remapped_rows(nvml)))
    assert checks.run(checks.nvidia_gpu_count, ev, exp).measured == 2
    assert checks.run(checks.nvidia_pcie_link, ev, exp, 1).status == "fail"
    assert checks.run(checks.nvidia_row_remap, ev, exp, 1).measured == "pending"
    # NVML unavailable on the node (exit 4): nvidia-smi answers.
    ev.items["nvml-query"] = Item("nvml-query", 4, "", "NVML could not start: Driver Not Loaded")
    assert checks.run(checks.nvidia_gpu_count, ev, exp).measured == 8


def test_query_falls_back_to_basic_fields_when_a_field_is_rejected(tmp_path: Any) -> None:
    """nvidia-smi rejects the whole query for one unknown field (old drivers, the lab's simulated tool): the
    collector asks again with the basic fields, and the checks needing the others say they are not reported."""
    import os
    import subprocess

    from llmrack.validation.evidence import GPU_BASIC_FIELDS, ITEMS

    tool = tmp_path / "nvidia-smi"
    tool.write_text(
        "#!/bin/sh\n"
        'case "$1" in *ecc.mode.current*)\n'
        '  echo \'Field "ecc.mode.current" is not a valid field to query.\'; exit 2;;\nesac\n'
        f'[ "$1" = "--query-gpu={GPU_BASIC_FIELDS}" ] || exit 9\n'
        "echo 'index, pci.bus_id, name, uuid, driver_version, persistence_mode, pstate, memory.total [MiB]'\n"
        "echo '0, 00000000:07:00.0, NVIDIA A100-SXM4-80GB, GPU-0, 550.127.05, Enabled, P0, 81920'\n")
    tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["sh", "-c", ITEMS["nvidia-smi-query"]], capture_output=True, text=True, env=env,
                          check=False)
    assert proc.returncode == 0 and "is not a valid field" in proc.stderr
    ev = evidence("nvidia-smi-a100-hgx-healthy")
    ev.items["nvidia-smi-query"] = Item("nvidia-smi-query", proc.returncode, proc.stdout, proc.stderr)
    exp = expectations("nvidia", "a100-80g", nvidia_driver_version="550.127.05")
    assert checks.run(checks.nvidia_driver_version, ev, exp).status == "pass"
    assert checks.run(checks.nvidia_sku, ev, exp, 0).status == "pass"
    ecc = checks.run(checks.nvidia_ecc_mode, ev, exp, 0)
    assert ecc.status == "error" and "ecc.mode.current" in ecc.detail


def test_query_asks_the_new_throttle_name_when_the_old_one_is_rejected(tmp_path: Any) -> None:
    """A driver that no longer takes clocks_throttle_reasons.active is asked for clocks_event_reasons.active, and
    the throttle check judges what it answers (here a HW slowdown)."""
    import os
    import subprocess

    from llmrack.validation.evidence import GPU_QUERIES, ITEMS

    row = "0, 00000000:07:00.0, NVIDIA A100-SXM4-80GB, GPU-0, 580.65.06, Enabled, Enabled, 0, 0, 4, 4, 16, 16, " \
          "0x0000000000000008, P0, 81920, 41, 250.1"
    tool = tmp_path / "nvidia-smi"
    tool.write_text(
        "#!/bin/sh\n"
        'case "$1" in *clocks_throttle_reasons*)\n'
        '  echo \'Field "clocks_throttle_reasons.active" is not a valid field to query.\'; exit 2;;\nesac\n'
        f'[ "$1" = "--query-gpu={GPU_QUERIES[1]}" ] || exit 9\n'
        f"echo '{GPU_QUERIES[1].replace(',', ', ')}'\n"
        f"echo '{row}'\n")
    tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["sh", "-c", ITEMS["nvidia-smi-query"]], capture_output=True, text=True, env=env,
                          check=False)
    assert proc.returncode == 0 and "clocks_event_reasons.active" in proc.stdout.splitlines()[0]
    ev = evidence("nvidia-smi-a100-hgx-healthy")
    ev.items["nvidia-smi-query"] = Item("nvidia-smi-query", proc.returncode, proc.stdout, proc.stderr)
    thr = checks.run(checks.nvidia_throttle, ev, expectations("nvidia", "a100-80g"), 0)
    assert (thr.status, thr.measured) == ("fail", "HwSlowdown")
