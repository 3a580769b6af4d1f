"""nvidia-smi outputs (CSV queries, `nvlink -s`), Fabric Manager's version line, and XID lines in the kernel log."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from llmrack.validation.parsers import ParseError

NA = ("[N/A]", "N/A", "[Not Supported]", "[Unknown Error]", "")


def _field(value: str) -> str | None:
    value = value.strip()
    return None if value in NA else value


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value, 0) if value.lower().startswith("0x") else int(float(value))
    except ValueError:
        return None


def query_csv(text: str) -> list[dict[str, str | None]]:
    """`nvidia-smi --query-*=... --format=csv[,nounits]` with its header: one dict per row, keyed by field name
    (the header's " [MiB]" unit suffix dropped), "[N/A]"-style values as None."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    rows = list(csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True))
    header = [re.sub(r"\s*\[.*\]$", "", h.strip()) for h in rows[0]]
    if not all(re.fullmatch(r"[a-z_]+(\.[a-z_0-9]+)*", h) for h in header):
        raise ParseError(f"not an nvidia-smi CSV query output (header: {rows[0]!r})")
    out = []
    for row in rows[1:]:
        if len(row) != len(header):
            raise ParseError(f"nvidia-smi CSV row has {len(row)} fields, header has {len(header)}: {row!r}")
        out.append({h: _field(v) for h, v in zip(header, row, strict=True)})
    return out


@dataclass(frozen=True)
class Gpu:
    index: int
    bus_id: str
    name: str
    uuid: str | None
    driver_version: str | None
    persistence_mode: str | None
    ecc_mode: str | None
    ecc_uncorrected_volatile: int | None
    ecc_uncorrected_aggregate: int | None
    pcie_gen: int | None
    pcie_gen_max: int | None
    pcie_width: int | None
    pcie_width_max: int | None
    throttle_reasons: int | None
    pstate: str | None
    memory_mib: int | None


def gpus(text: str) -> list[Gpu]:
    out = []
    for row in query_csv(text):
        out.append(
            Gpu(
                index=_int(row.get("index")) or 0,
                bus_id=normalise_bus_id(row.get("pci.bus_id") or ""),
                name=row.get("name") or "?",
                uuid=row.get("uuid"),
                driver_version=row.get("driver_version"),
                persistence_mode=row.get("persistence_mode"),
                ecc_mode=row.get("ecc.mode.current"),
                ecc_uncorrected_volatile=_int(row.get("ecc.errors.uncorrected.volatile.total")),
                ecc_uncorrected_aggregate=_int(row.get("ecc.errors.uncorrected.aggregate.total")),
                pcie_gen=_int(row.get("pcie.link.gen.current")),
                pcie_gen_max=_int(row.get("pcie.link.gen.max")),
                pcie_width=_int(row.get("pcie.link.width.current")),
                pcie_width_max=_int(row.get("pcie.link.width.max")),
                throttle_reasons=_int(_either(row, THROTTLE_FIELDS)),
                pstate=row.get("pstate"),
                memory_mib=_int(row.get("memory.total")),
            )
        )
    return sorted(out, key=lambda g: g.index)


# The active clock-limiting reasons, under both names nvidia-smi has printed: R535 renamed
# clocks_throttle_reasons.* to clocks_event_reasons.* (same bits) and answers an old-name query under the new
# header, so the CSV may carry either.
THROTTLE_FIELDS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")


def _either(row: dict[str, str | None], names: tuple[str, ...]) -> str | None:
    return next((row[n] for n in names if n in row), None)


def normalise_bus_id(bus_id: str) -> str:
    """nvidia-smi prints 00000000:07:00.0, the kernel log 0000:07:00 -> compare on "07:00" (bus:device)."""
    match = re.search(r"([0-9a-fA-F]{2}):([0-9a-fA-F]{2})(?:\.[0-7])?$", bus_id.strip())
    return f"{match.group(1)}:{match.group(2)}".lower() if match else bus_id.strip().lower()


@dataclass(frozen=True)
class RemappedRows:
    bus_id: str
    correctable: int | None
    uncorrectable: int | None
    pending: bool | None
    failure: bool | None


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() in ("yes", "1", "true")


def remapped_rows(text: str) -> dict[str, RemappedRows]:
    """`nvidia-smi --query-remapped-rows=...`, keyed by normalised bus id."""
    out = {}
    for row in query_csv(text):
        bus = normalise_bus_id(row.get("gpu_bus_id") or "")
        out[bus] = RemappedRows(
            bus_id=bus,
            correctable=_int(row.get("remapped_rows.correctable")),
            uncorrectable=_int(row.get("remapped_rows.uncorrectable")),
            pending=_flag(row.get("remapped_rows.pending")),
            failure=_flag(row.get("remapped_rows.failure")),
        )
    return out


_NVLINK_GPU = re.compile(r"^GPU (\d+): (.+?)(?: \(UUID: [^)]*\))?\s*$")
_NVLINK_LINK = re.compile(r"^\s*Link (\d+): (.+?)\s*$")


def nvlink_status(text: str) -> dict[int, dict[int, float | None]]:
    """`nvidia-smi nvlink -s`: GPU index -> link index -> GB/s, None for a link reported <inactive>."""
    out: dict[int, dict[int, float | None]] = {}
    current: int | None = None
    for line in text.splitlines():
        gpu = _NVLINK_GPU.match(line)
        if gpu:
            current = int(gpu.group(1))
            out[current] = {}
            continue
        link = _NVLINK_LINK.match(line)
        if link and current is not None:
            speed = re.match(r"([\d.]+)\s*GB/s", link.group(2))
            out[current][int(link.group(1))] = float(speed.group(1)) if speed else None
    return out


def fabricmanager_version(text: str) -> str | None:
    """`nv-fabricmanager --version` prints "Fabric Manager version is : 535.129.03"."""
    match = re.search(r"version is\s*:\s*(\S+)", text)
    return match.group(1) if match else None


# --- XID errors in the kernel log ------------------------------------------------------------------------
# Meanings from NVIDIA's "XID Errors" catalog (docs.nvidia.com/deploy/xid-errors). `node` is True where the
# usual cause is the GPU, its memory, its link or the driver (the node is not fit to serve until someone acts);
# False where it is usually an application fault (an illegal address in a user kernel), reported but not failed.
XID: dict[int, tuple[str, bool]] = {
    8: ("GPU stopped processing (driver timeout)", True),
    13: ("Graphics engine exception (usually an application fault)", False),
    31: ("GPU memory page fault (usually an application's illegal address)", False),
    32: ("Invalid or corrupted push buffer stream (driver, PCIe or system memory)", True),
    38: ("Driver firmware error", True),
    43: ("GPU stopped processing (a user application faulted)", False),
    45: ("Preemptive cleanup after a previous error or a killed process", False),
    48: ("Double-bit ECC error (uncorrectable memory error)", True),
    61: ("Internal micro-controller breakpoint/warning", True),
    62: ("Internal micro-controller halt (reset the GPU)", True),
    63: ("ECC page retirement or row remapping recorded (reset to apply)", True),
    64: ("ECC page retirement or row remapping failed", True),
    69: ("Graphics engine class error", False),
    74: ("NVLink error (link or NVSwitch fault)", True),
    79: ("GPU has fallen off the bus (PCIe link, power or thermal; the GPU is gone until reset)", True),
    92: ("High single-bit ECC error rate", True),
    94: ("Contained ECC error (application killed, row remap pending: reset soon)", True),
    95: ("Uncontained ECC error (reset the GPU)", True),
    109: ("Context switch timeout", True),
    119: ("GSP RPC timeout (GPU firmware not answering)", True),
    120: ("GSP error", True),
    140: ("Unrecovered ECC error", True),
    143: ("GPU initialization failure", True),
    154: ("GPU recovery action changed (reset or reboot required)", True),
}

_XID_LINE = re.compile(r"NVRM: Xid \(PCI:([0-9a-fA-F:.]+)\): (\d+),\s*(.*)$")


@dataclass(frozen=True)
class XidEvent:
    bus_id: str
    code: int
    text: str

    @property
    def meaning(self) -> str:
        known = XID.get(self.code)
        return known[0] if known else "not in llmrack's table: see NVIDIA's XID catalog"

    @property
    def node_fault(self) -> bool:
        known = XID.get(self.code)
        return known[1] if known else True


def xid_events(kernel_log: str) -> list[XidEvent]:
    out = []
    for line in kernel_log.splitlines():
        match = _XID_LINE.search(line)
        if match:
            out.append(XidEvent(normalise_bus_id(match.group(1)), int(match.group(2)), match.group(3).strip()))
    return out


# Bits of clocks_event_reasons.active / clocks_throttle_reasons.active (nvml.h: nvmlClocksEventReason*, formerly
# nvmlClocksThrottleReason*). `fault` marks the reasons that mean the hardware protects itself (thermal, power
# brake, HW slowdown): a node in that state under-delivers.
THROTTLE: dict[int, tuple[str, bool]] = {
    0x1: ("GpuIdle", False),
    0x2: ("ApplicationsClocksSetting", False),
    0x4: ("SwPowerCap", False),
    0x8: ("HwSlowdown", True),
    0x10: ("SyncBoost", False),
    0x20: ("SwThermalSlowdown", True),
    0x40: ("HwThermalSlowdown", True),
    0x80: ("HwPowerBrakeSlowdown", True),
    0x100: ("DisplayClockSetting", False),
}


def throttle_names(mask: int) -> list[tuple[str, bool]]:
    return [entry for bit, entry in THROTTLE.items() if mask & bit]


@dataclass(frozen=True)
class NcclRow:
    """One size of an nccl-tests report: bus bandwidth and wrong elements, out-of-place and in-place."""

    bytes: int
    busbw_out: float
    busbw_in: float
    wrong: int | None  # None where the run did not check (-c 0: "N/A")


@dataclass(frozen=True)
class NcclReport:
    rows: list[NcclRow]
    out_of_bounds: int | None  # "# Out of bounds values : N OK|FAILED"
    avg_busbw: float | None
    ranks: list[tuple[int, str, int]]  # "#  Rank R Group G Pid P on HOST device D ...": (rank, host, device), once each


RANK_LINE = re.compile(r"#\s+Rank\s+(\d+)\s+Group\s+\d+\s+Pid\s+\d+\s+on\s+(\S+)\s+device\s+(\d+)")


def nccl_tests(text: str) -> NcclReport:
    """The report of an nccl-tests binary (all_reduce_perf ...) as rank 0 prints it: the "Using devices" lines, one
    row per size (size count type redop root time algbw busbw #wrong, out-of-place then in-place), then the
    out-of-bounds count and the average bus bandwidth."""
    rows, ranks = [], {}
    for line in text.splitlines():
        # Searched anywhere in the line: mpirun forwards each rank's output as it arrives, and a rank's line can
        # land inside another's that was still being written.
        found = list(RANK_LINE.finditer(line))
        if found:
            ranks.update({int(m.group(1)): (m.group(2), int(m.group(3))) for m in found})
            continue
        cells = line.split()
        if len(cells) == 13 and cells[0].isdigit() and cells[1].isdigit():
            wrong = [None if c == "N/A" else int(c) for c in (cells[8], cells[12])]
            rows.append(NcclRow(int(cells[0]), float(cells[7]), float(cells[11]),
                                None if None in wrong else sum(w for w in wrong if w is not None)))
    if not rows:
        raise ParseError("not an nccl-tests report (no result row: size count type redop root time algbw busbw "
                         "#wrong ...)")
    bounds = re.search(r"Out of bounds values\s*:\s*(\d+)", text)
    avg = re.search(r"Avg bus bandwidth\s*:\s*([0-9.]+)", text)
    return NcclReport(rows, int(bounds.group(1)) if bounds else None, float(avg.group(1)) if avg else None,
                      [(rank, host, device) for rank, (host, device) in sorted(ranks.items())])
