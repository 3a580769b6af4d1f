"""Linux outputs: sysctl -a, /proc/cmdline, /proc/modules, systemctl states, the NCCL env file, /proc/cpuinfo."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass


def sysctl(text: str) -> dict[str, str]:
    """`sysctl -a` or sysctl.d files: "key = value" lines; values normalised to single spaces (tabs separate
    multi-values); comments skipped."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            out[key.strip()] = " ".join(value.split())
    return out


def cmdline(text: str) -> dict[str, str | None]:
    """/proc/cmdline: param -> value (None for a bare flag)."""
    out: dict[str, str | None] = {}
    for token in text.split():
        key, _, value = token.partition("=")
        out[key] = value if _ else None
    return out


def modules(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines() if line.strip()}


@dataclass(frozen=True)
class UnitState:
    enabled: str
    active: str


def unit_states(text: str) -> dict[str, UnitState]:
    """The collector's "unit enabled-state active-state" lines (empty states become "not-found")."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if parts:
            out[parts[0]] = UnitState(
                enabled=parts[1] if len(parts) > 1 else "not-found",
                active=parts[2] if len(parts) > 2 else "unknown",
            )
    return out


def env_file(text: str) -> dict[str, str]:
    """A systemd EnvironmentFile / shell env file: KEY=value lines, comments and `export` allowed."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip().removeprefix("export ").strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            parts = shlex.split(value) if value else [""]
            out[key] = parts[0] if len(parts) == 1 else value
    return out


def interfaces(ip_link: str) -> set[str]:
    """`ip -o link show`: "2: eth0@if5: <...>" -> {"eth0"}."""
    out = set()
    for line in ip_link.splitlines():
        match = re.match(r"^\d+:\s+([^:@\s]+)", line)
        if match:
            out.add(match.group(1))
    return out


def cpu_model(cpuinfo: str) -> str | None:
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return match.group(1).strip() if match else None


def cpu_flags(cpuinfo: str) -> set[str]:
    match = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return set(match.group(1).split()) if match else set()
