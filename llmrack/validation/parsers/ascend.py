"""Huawei Ascend outputs: `npu-smi info` (the chip table), `npu-smi info -t board -i N`, version.info files,
and `hccn_tool -i N -link -g`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmrack.validation.parsers import ParseError, blocks


@dataclass(frozen=True)
class Npu:
    npu: int
    chip: int
    name: str
    health: str
    bus_id: str
    hbm_used_mb: int | None
    hbm_total_mb: int | None


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def npu_smi_info(text: str) -> tuple[str | None, list[Npu]]:
    """`npu-smi info`: (the driver version in its header, one Npu per chip). Each chip is two table rows:
    "| NPU Name | Health | Power Temp Hugepages |" then "| Chip | Bus-Id | AICore Memory-Usage HBM-Usage |"."""
    version = re.search(r"Version:\s*(\S+)", text)
    if "npu-smi" not in text or "Health" not in text:
        raise ParseError("not `npu-smi info` output (no npu-smi header with a Health column)")
    rows = [line for line in text.splitlines() if line.startswith("|")]
    out: list[Npu] = []
    pending: list[str] | None = None
    for line in rows:
        cells = _cells(line)
        if len(cells) < 3 or "Process id" in line or "No running processes" in line:
            pending = None
            continue
        first = cells[0].split()
        if len(first) >= 2 and first[0].isdigit() and pending is None:
            pending = cells
        elif pending is not None and first and first[0].isdigit():
            npu_id, name = pending[0].split()[0], " ".join(pending[0].split()[1:])
            hbm = re.search(r"(\d+)\s*/\s*(\d+)\s*$", cells[2])
            out.append(
                Npu(
                    npu=int(npu_id), chip=int(first[0]), name=name, health=pending[1], bus_id=cells[1],
                    hbm_used_mb=int(hbm.group(1)) if hbm else None,
                    hbm_total_mb=int(hbm.group(2)) if hbm else None,
                )
            )
            pending = None
    return (version.group(1) if version else None), out


NPU_HEADER = re.compile(r"^== npu (\d+)\s*$")


def sections(text: str) -> dict[int, str]:
    """Outputs the collector prefixes with "== npu N" per NPU."""
    return {int(npu): body for npu, body in blocks(text, NPU_HEADER).items()}


def key_values(text: str, sep: str = ":") -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if sep in line:
            key, value = line.split(sep, 1)
            out[key.strip().lower()] = value.strip()
    return out


def firmware_versions(board_text: str) -> dict[int, str | None]:
    return {npu: key_values(body).get("firmware version") for npu, body in sections(board_text).items()}


def version_info(text: str) -> str | None:
    """/usr/local/Ascend/driver/version.info ("Version=23.0.3") or the CANN install.info ("version=7.0.0")."""
    return key_values(text, "=").get("version")


def hccn_links(text: str) -> dict[int, str | None]:
    """`hccn_tool -i N -link -g` per NPU: "link status: UP" -> {N: "UP"}."""
    return {npu: key_values(body).get("link status") for npu, body in sections(text).items()}


def net_health(text: str) -> dict[int, str | None]:
    """`hccn_tool -i N -net_health -g` per NPU: "net health status: Success" -> {N: "Success"} (else Fault, Init,
    ...)."""
    return {npu: key_values(body).get("net health status") for npu, body in sections(text).items()}


def npu_addresses(text: str) -> dict[int, str | None]:
    """`hccn_tool -i N -ip -g` per NPU: "ipaddr:10.20.0.20" -> {N: "10.20.0.20"}."""
    return {npu: key_values(body).get("ipaddr") for npu, body in sections(text).items()}


@dataclass(frozen=True)
class Ping:
    device: int
    address: str
    transmitted: int
    received: int
    times_ms: list[float]


def hccn_pings(text: str) -> list[Ping]:
    """`hccn_tool -i N -ping -g address A`, one or more: "device N PING A", "recv seq=S,time=T ms" per answer, then
    "K packets transmitted, R received, L% packet loss"."""
    out: list[Ping] = []
    head: tuple[int, str] | None = None
    times: list[float] = []
    for line in text.splitlines():
        start = re.match(r"^device (\d+) PING (\S+)", line.strip())
        if start:
            head, times = (int(start.group(1)), start.group(2)), []
            continue
        recv = re.match(r"^recv seq=\d+,\s*time=([0-9.]+)\s*ms", line.strip())
        if recv and head:
            times.append(float(recv.group(1)))
            continue
        total = re.match(r"^(\d+) packets transmitted, (\d+) received", line.strip())
        if total and head:
            out.append(Ping(head[0], head[1], int(total.group(1)), int(total.group(2)), times))
            head = None
    return out
