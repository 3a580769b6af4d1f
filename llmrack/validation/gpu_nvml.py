"""GPU facts through NVML (nvidia-ml-py), run ON the node by its Python; standard library + pynvml only.

Prints exactly what `nvidia-smi --query-gpu=<FIELDS> --format=csv,nounits` (or `--query-remapped-rows`) prints,
so one parser reads either source. NVML is the library nvidia-smi itself uses; reading it directly avoids the
tool's version-to-version output drift. Exit 3: pynvml is not installed; 4: NVML could not start (no driver).
The collector falls back to nvidia-smi in both cases.

    python gpu_nvml.py query|remapped
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

QUERY_FIELDS = (
    "index", "pci.bus_id", "name", "uuid", "driver_version", "persistence_mode", "ecc.mode.current",
    "ecc.errors.uncorrected.volatile.total", "ecc.errors.uncorrected.aggregate.total", "pcie.link.gen.current",
    "pcie.link.gen.max", "pcie.link.width.current", "pcie.link.width.max", "clocks_throttle_reasons.active",
    "pstate", "memory.total", "temperature.gpu", "power.draw",
)
REMAP_FIELDS = ("gpu_bus_id", "remapped_rows.correctable", "remapped_rows.uncorrectable", "remapped_rows.pending",
                "remapped_rows.failure")
UNITS = {"memory.total": " [MiB]", "power.draw": " [W]"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _safe(nvml: Any, fn: Callable[[Any], Any], handle: Any) -> str:
    try:
        return _text(fn(handle))
    except nvml.NVMLError:  # NotSupported, NoPermission...: nvidia-smi prints [N/A] too
        return "[N/A]"


def _enabled(flag: Any) -> str:
    return "Enabled" if int(flag) else "Disabled"


def query_rows(nvml: Any) -> list[list[str]]:
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    # Renamed "event reasons" in newer bindings; same bits.
    throttle = (getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
                or nvml.nvmlDeviceGetCurrentClocksEventReasons)
    uncorrected = nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    getters: list[Callable[[Any], Any]] = [
        lambda h: nvml.nvmlDeviceGetPciInfo(h).busId,
        nvml.nvmlDeviceGetName,
        nvml.nvmlDeviceGetUUID,
        lambda h: driver,
        lambda h: _enabled(nvml.nvmlDeviceGetPersistenceMode(h)),
        lambda h: _enabled(nvml.nvmlDeviceGetEccMode(h)[0]),
        lambda h: nvml.nvmlDeviceGetTotalEccErrors(h, uncorrected, nvml.NVML_VOLATILE_ECC),
        lambda h: nvml.nvmlDeviceGetTotalEccErrors(h, uncorrected, nvml.NVML_AGGREGATE_ECC),
        nvml.nvmlDeviceGetCurrPcieLinkGeneration,
        nvml.nvmlDeviceGetMaxPcieLinkGeneration,
        nvml.nvmlDeviceGetCurrPcieLinkWidth,
        nvml.nvmlDeviceGetMaxPcieLinkWidth,
        lambda h: f"0x{throttle(h):016x}",
        lambda h: f"P{nvml.nvmlDeviceGetPerformanceState(h)}",
        lambda h: nvml.nvmlDeviceGetMemoryInfo(h).total // (1024 * 1024),
        lambda h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
        lambda h: f"{nvml.nvmlDeviceGetPowerUsage(h) / 1000:.2f}",
    ]
    rows = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        rows.append([str(i), *(_safe(nvml, get, handle) for get in getters)])
    return rows


def remapped_rows(nvml: Any) -> list[list[str]]:
    rows = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        bus = _safe(nvml, lambda h: nvml.nvmlDeviceGetPciInfo(h).busId, handle)
        try:
            corr, unc, pending, failure = nvml.nvmlDeviceGetRemappedRows(handle)
            rows.append([bus, str(corr), str(unc), "Yes" if pending else "No", "Yes" if failure else "No"])
        except nvml.NVMLError:
            rows.append([bus, "[N/A]", "[N/A]", "[N/A]", "[N/A]"])
    return rows


def render(fields: tuple[str, ...], rows: list[list[str]]) -> str:
    header = ", ".join(f + UNITS.get(f, "") for f in fields)
    return "\n".join([header, *(", ".join(r) for r in rows)]) + "\n"


def main(argv: list[str]) -> int:
    try:
        import pynvml  # type: ignore[import-untyped]  # noqa: PLC0415  (the node may lack it: exit 3)
    except ImportError:
        print("nvidia-ml-py (pynvml) is not installed for this Python", file=sys.stderr)
        return 3
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        print(f"NVML could not start: {exc}", file=sys.stderr)
        return 4
    try:
        if argv[:1] == ["remapped"]:
            sys.stdout.write(render(REMAP_FIELDS, remapped_rows(pynvml)))
        else:
            sys.stdout.write(render(QUERY_FIELDS, query_rows(pynvml)))
    finally:
        pynvml.nvmlShutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
