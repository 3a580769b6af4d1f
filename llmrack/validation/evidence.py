"""Evidence: the raw outputs read from one node, as named files.

A node's evidence is gathered in ONE round trip: a POSIX shell script runs every command on the node, each
writing `<name>.out`, `<name>.err` and `<name>.rc` into a temporary directory, which comes back as a base64
tar stream. The same bytes become a dump directory (`llmrack validate collect`), a `.tar.gz` archive, or live
in memory during a run; the checks read evidence the same way in all three cases.

Dump layout (schema `llmrack-evidence/1`), one file set per item in ITEMS below:

    manifest.json          {"schema", "host", "collected_at", "level", "collector": {"python": ...}}
    <item>.out             the command's standard output, verbatim
    <item>.err             its standard error
    <item>.rc              its exit status (127: the tool is not installed on the node)
    probe.out / .err / .rc the performance probe's JSON output (only with level standard or full)
"""

from __future__ import annotations

import base64
import io
import json
import shlex
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from llmrack.errors import UsageError
from llmrack.validation import model_evidence

SCHEMA = "llmrack-evidence/1"

# Units whose state the suite reads (enabled + active), whatever the node's kind: reading a unit that does
# not exist is cheap and says "not-found", which the checks interpret against the node's expectations.
UNITS = (
    "containerd",
    "llmrack-serving",
    "nvidia-persistenced",
    "nvidia-fabricmanager",
    "prometheus-node-exporter",
)

GPU_FIELDS = (
    "index,pci.bus_id,name,uuid,driver_version,persistence_mode,ecc.mode.current,"
    "ecc.errors.uncorrected.volatile.total,ecc.errors.uncorrected.aggregate.total,pcie.link.gen.current,"
    "pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,clocks_throttle_reasons.active,pstate,"
    "memory.total,temperature.gpu,power.draw"
)
GPU_BASIC_FIELDS = "index,pci.bus_id,name,uuid,driver_version,persistence_mode,pstate,memory.total"
# R535 renamed clocks_throttle_reasons.* to clocks_event_reasons.* and kept the old name as an alias (answered
# under the new header); the parser reads either header.
GPU_QUERIES = (GPU_FIELDS, GPU_FIELDS.replace("clocks_throttle_reasons.", "clocks_event_reasons."), GPU_BASIC_FIELDS)

# name -> shell command run on the node. Names are file names in a dump; keep them stable.
ITEMS: dict[str, str] = {
    "uname": "uname -a",
    "os-release": "cat /etc/os-release",
    "cmdline": "cat /proc/cmdline",
    # /sys/module lists loaded modules too, where /proc/modules is hidden (some container sandboxes).
    "modules": "cat /proc/modules 2>/dev/null || ls -1 /sys/module",
    "sysctl": "sysctl -a 2>/dev/null",
    # What the node persists (the common role's drop-in); in a container the kernel-wide values are the host's.
    "sysctl-files": "cat /etc/sysctl.conf /etc/sysctl.d/*.conf 2>/dev/null",
    "virt": "systemd-detect-virt --container",
    "cpuinfo": "cat /proc/cpuinfo",
    "meminfo": "cat /proc/meminfo",
    "nproc": "nproc",
    # Software versions a support engineer asks for first; each line says which tool answered.
    "versions": "for c in 'python3 --version' 'containerd --version' 'runc --version' 'nvidia-smi --version' "
    "'nv-fabricmanager --version' 'npu-smi -v' 'ctr --version'; do printf '$ %s\\n' \"$c\"; sh -c \"$c\" 2>&1 "
    "| head -n 3; done",
    "ip-link": "ip -o link show",
    "systemctl": "for u in " + " ".join(UNITS) + "; do "
    'printf "%s %s %s\\n" "$u" "$(systemctl is-enabled "$u" 2>/dev/null || true)" '
    '"$(systemctl is-active "$u" 2>/dev/null || true)"; done',
    "containerd-version": "containerd --version",
    "containerd-config": "containerd config dump",
    "nccl-env": "cat /etc/llmrack/nccl.env",
    # The gateway's TLS certificates (checks/security.py): each file HAProxy loads with `ssl crt` (a file or a
    # directory of them), certificate blocks only, so a key kept in the same file never leaves the node.
    "gateway-certificates": "[ -f /etc/haproxy/haproxy.cfg ] || exit 0; "
    "for crt in $(sed -n 's/.* ssl crt \\([^ ]*\\).*/\\1/p' /etc/haproxy/haproxy.cfg | sort -u); do "
    'for f in "$crt" "$crt"/*; do [ -f "$f" ] || continue; printf "== %s\\n" "$f"; '
    "sed -n '/-BEGIN CERTIFICATE-/,/-END CERTIFICATE-/p' \"$f\"; done; done",
    "dmesg": "dmesg 2>/dev/null || journalctl -k -b --no-pager -o short-monotonic",
    "lspci": "lspci -vv",
    "ibstat": "ibstat",
    "infiniband": "ls /sys/class/infiniband",
    # NVIDIA. The CSV query is what the checks parse (header kept, so column order never matters); -q and
    # topo are kept for the humans reading a dump.
    # A tool that rejects one field rejects the whole query ('Field "x" is not a valid field to query.'): ask
    # again with the throttle field's newer name (a driver that dropped the old alias), then with the basic
    # fields, so count, SKU, memory and driver are still judged and the rest say why not.
    "nvidia-smi-query": "for f in " + " ".join(GPU_QUERIES) + "; do "
    'out=$(nvidia-smi --query-gpu="$f" --format=csv,nounits 2>&1); rc=$?; '
    'if [ $rc -eq 0 ] || ! printf "%s" "$out" | grep -q "is not a valid field" '
    f'|| [ "$f" = {GPU_BASIC_FIELDS} ]; then printf "%s\\n" "$out"; exit $rc; fi; '
    'printf "%s\\n" "$out" >&2; done',
    "nvidia-smi-remapped-rows": "nvidia-smi --query-remapped-rows=gpu_bus_id,remapped_rows.correctable,"
    "remapped_rows.uncorrectable,remapped_rows.pending,remapped_rows.failure --format=csv",
    "nvidia-smi-q": "nvidia-smi -q",
    "nvidia-smi-topo": "nvidia-smi topo -m",
    "nvidia-smi-nvlink": "nvidia-smi nvlink -s",
    "fabricmanager-version": "nv-fabricmanager --version",
    # Huawei Ascend.
    "npu-smi-info": "npu-smi info",
    "npu-smi-board": "for i in $(npu-smi info -l | awk -F: '/NPU ID/ {gsub(/ /, \"\", $2); print $2}'); do "
    'echo "== npu $i"; npu-smi info -t board -i "$i"; done',
    "ascend-driver-version": "cat /usr/local/Ascend/driver/version.info",
    "ascend-cann-version": "cat /usr/local/Ascend/ascend-toolkit/latest/*/ascend_toolkit_install.info",
    "hccn-link": "for i in $(npu-smi info -l | awk -F: '/NPU ID/ {gsub(/ /, \"\", $2); print $2}'); do "
    'echo "== npu $i"; hccn_tool -i "$i" -link -g; done',
}

PROBE = "probe"
# Read through NVML by the node's Python when it has nvidia-ml-py; same CSV as the nvidia-smi items above.
NVML_ITEMS = {"nvml-query": "query", "nvml-remapped-rows": "remapped"}


@dataclass(frozen=True)
class Item:
    """One command's result on the node."""

    name: str
    rc: int
    out: str
    err: str = ""

    @property
    def ran(self) -> bool:
        return self.rc == 0

    @property
    def missing_tool(self) -> bool:
        return self.rc == 127


@dataclass
class Evidence:
    """All items read from one node, plus where they came from."""

    host: str
    items: dict[str, Item] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Item | None:
        return self.items.get(name)

    def has(self, name: str) -> bool:
        return name in self.items

    # --- (de)serialisation: one file set per item --------------------------------------------------
    @classmethod
    def from_files(cls, files: Mapping[str, bytes], where: str) -> Evidence:
        if "manifest.json" not in files:
            raise UsageError(f"{where}: not an llmrack evidence dump (no manifest.json)")
        try:
            manifest = json.loads(files["manifest.json"])
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike: a damaged dump
            raise UsageError(f"{where}: manifest.json is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise UsageError(f"{where}: manifest.json is not a JSON object")
        if manifest.get("schema") != SCHEMA:
            raise UsageError(f"{where}: unknown dump schema {manifest.get('schema')!r}, expected {SCHEMA}")
        items: dict[str, Item] = {}
        for fname in files:
            if fname.endswith(".rc"):
                name = fname[:-3]
                text = files[fname].decode(errors="replace").strip() or "255"
                if not text.lstrip("-").isdigit():
                    raise UsageError(f"{where}: {fname} holds {text[:40]!r}, not an exit status")
                items[name] = Item(
                    name=name,
                    rc=int(text),
                    out=files.get(f"{name}.out", b"").decode(errors="replace"),
                    err=files.get(f"{name}.err", b"").decode(errors="replace"),
                )
        return cls(host=str(manifest.get("host", "?")), items=items, manifest=manifest)

    def to_files(self) -> dict[str, bytes]:
        files = {"manifest.json": json.dumps(self.manifest, indent=2).encode()}
        for item in self.items.values():
            files[f"{item.name}.out"] = item.out.encode()
            files[f"{item.name}.err"] = item.err.encode()
            files[f"{item.name}.rc"] = f"{item.rc}\n".encode()
        return files

    @classmethod
    def load(cls, path: Path) -> Evidence:
        """A dump directory or a .tar.gz archive written by `write`."""
        if path.is_dir():
            files = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
            return cls.from_files(files, str(path))
        if path.is_file():
            try:
                return cls.from_files(_untar(path.read_bytes()), str(path))
            except tarfile.TarError as exc:
                raise UsageError(f"{path}: not a dump directory or .tar.gz archive: {exc}") from None
        raise UsageError(f"{path}: no such dump directory or archive")

    def write(self, out: Path) -> Path:
        """Write as a directory, or as an archive when `out` ends in .tar.gz / .tgz."""
        files = self.to_files()
        if out.name.endswith((".tar.gz", ".tgz")):
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(_tar(files))
        else:
            out.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (out / name).write_bytes(data)
        return out


def _tar(files: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _untar(data: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                if handle is not None:
                    files[Path(member.name).name] = handle.read()
    return files


# --- gathering on the node ---------------------------------------------------------------------------
class Runner(Protocol):
    """What gathering needs from a connection: testinfra's Host satisfies it (host.run)."""

    def run(self, command: str, *args: str, **kwargs: Any) -> Any: ...


def probe_source() -> str:
    return resources.files("llmrack.validation").joinpath("probe_node.py").read_text()


def nvml_source() -> str:
    return resources.files("llmrack.validation").joinpath("gpu_nvml.py").read_text()


@dataclass(frozen=True)
class ServingImageProbe:
    """Run the probe inside the node's serving image (where its torch is, on a rack), through containerd's `ctr`,
    with the accelerator runtime arguments the serving role uses. The image is the one the running serving
    container was started from."""

    namespace: str = "llmrack"
    container: str = "llmrack-serving"
    snapshotter: str = "overlayfs"
    runtime_args: tuple[str, ...] = ()

    def command(self, level: str) -> str:
        return self.run("the probe", '--mount type=bind,src="$d",dst=/llmrack-probe,options=rbind:ro '
                        "--mount type=bind,src=/dev/shm,dst=/dev/shm,options=rbind:rw ",
                        f"llmrack-probe-$$ python /llmrack-probe/probe.py --level {shlex.quote(level)}")

    def run(self, what: str, options: str, argv: str, prefix: str = "") -> str:
        """Shell that runs `argv` (container id, then the command) with ctr's `options` in the image of the
        running serving container; exit 125 naming the container where there is none. `prefix` goes before ctr."""
        ns, ctr = shlex.quote(self.namespace), shlex.quote(self.container)
        args = " ".join(shlex.quote(a) for a in self.runtime_args)
        return (
            f"img=$(ctr -n {ns} containers info {ctr} 2>/dev/null"
            " | sed -n 's/^ *\"Image\": \"\\(.*\\)\",*$/\\1/p' | head -n1); "
            f'if [ -z "$img" ]; then echo "no {self.container} container in namespace {self.namespace}: '
            f'no serving image to run {what} in" >&2; exit 125; fi; '
            f"{prefix}ctr -n {ns} run --rm --snapshotter {shlex.quote(self.snapshotter)} {args} {options}"
            f'"$img" {argv}'
        )


def collector_script(level: str, python: str, image: ServingImageProbe | None = None) -> str:
    """The shell script that runs every item on the node and prints a base64 tar of the results."""
    lines = ["d=$(mktemp -d)", "cd \"$d\" || exit 3"]
    for name, command in ITEMS.items():
        lines.append(f"( {command} ) >{name}.out 2>{name}.err </dev/null; echo $? >{name}.rc")
    nvml = base64.b64encode(nvml_source().encode()).decode()
    lines.append(f"echo {nvml} | base64 -d > gpu_nvml.py")
    for name, arg in NVML_ITEMS.items():
        lines.append(f"( {python} gpu_nvml.py {arg} ) >{name}.out 2>{name}.err </dev/null; echo $? >{name}.rc")
    lines.append("rm -f gpu_nvml.py")
    lines.append(model_evidence.collector_line(level, python))
    if level in ("standard", "full"):
        src = base64.b64encode(probe_source().encode()).decode()
        lines.append(f"echo {src} | base64 -d > probe.py")
        run_probe = image.command(level) if image else f"{python} probe.py --level {shlex.quote(level)}"
        lines.append(f"( {run_probe} ) >{PROBE}.out 2>{PROBE}.err </dev/null; echo $? >{PROBE}.rc")
        lines.append("rm -f probe.py")
    # tar of the whole directory, base64 so any byte survives the text channel.
    lines.append('tar -C "$d" -czf - . | base64 -w0; rc=$?; rm -rf "$d"; exit $rc')
    return "\n".join(lines)


def gather(runner: Runner, host: str, level: str, python: str = "python3",
           image: ServingImageProbe | None = None) -> Evidence:
    """Run the collector on a node over `runner` (a testinfra Host) and return its evidence."""
    script = collector_script(level, python, image)
    started = datetime.now(UTC)
    try:
        result = runner.run("sh -c %s", script)
    except Exception as exc:  # testinfra raises RuntimeError when ssh itself fails (exit 255)
        err = getattr(exc.args[0], "stderr", "") if exc.args else ""
        raise GatherError(f"{host}: cannot reach the node: {str(err or exc).strip()[:500]}") from None
    if result.rc != 0 or not result.stdout.strip():
        raise GatherError(f"{host}: evidence collection failed (rc={result.rc}): {result.stderr.strip()[:500]}")
    files = _untar(base64.b64decode(result.stdout.strip()))
    files["manifest.json"] = json.dumps(
        {
            "schema": SCHEMA,
            "host": host,
            "collected_at": started.isoformat(timespec="seconds"),
            "level": level,
            "seconds": round((datetime.now(UTC) - started).total_seconds(), 2),
            "python": python,
        }
    ).encode()
    return Evidence.from_files(files, host)


class GatherError(Exception):
    """The node could not be read at all (unreachable, no shell): the checks on it are errors."""
