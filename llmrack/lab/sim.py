"""Simulated accelerators for lab nodes: builds the stub installers of llmrack/lab/data/sim into the lab's mirror.

The stubs ship as package data of the lab (an installed llmrack runs its own lab) and are used nowhere else; a lab
node of a sim-* profile also gets the hardware description its stub tools answer from. The roles never know: they
install from the mirror and query nvidia-smi / npu-smi as on a rack.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from llmrack.errors import LlmrackError
from llmrack.lab.state import Profile

SIM_DIR = Path(__file__).resolve().parent / "data" / "sim"
HARDWARE_PATH_ON_NODE = "/etc/llmrack-sim/hardware.json"
PAYLOAD_MARK = "__LLMRACK_SIM_PAYLOAD__"

# asset directory -> (mirror subdirectory, file name pattern)
RUN_INSTALLERS = {
    "nvidia-driver": ("nvidia", "NVIDIA-Linux-x86_64-{v}.run"),
    "ascend-driver": ("ascend", "Ascend-hdk-910b-npu-driver_{v}_linux-x86-64.run"),
    "ascend-firmware": ("ascend", "Ascend-hdk-910b-npu-firmware_{v}.run"),
    "ascend-cann": ("ascend", "Ascend-cann-toolkit_{v}_linux-x86_64.run"),
    "ascend-docker-runtime": ("ascend", "Ascend-docker-runtime_{v}_linux-x86_64.run"),
}

# nccl-tests built with MPI=1, as a site packs its own build for the nccl_tuning role (a top directory
# nccl-tests-<version>/ holding build/).
NCCL_TESTS_ARCHIVE = "nccl-tests-{v}-x86_64.tar.gz"


def sim_dir() -> Path:
    if not (SIM_DIR / "versions.json").exists():
        raise LlmrackError(f"simulated-accelerator assets not found at {SIM_DIR}: the llmrack installation is "
                           "incomplete; reinstall it (pip install llmrack, or `make lab` in a checkout)")
    return SIM_DIR


def versions() -> dict[str, str]:
    data: dict[str, str] = json.loads((sim_dir() / "versions.json").read_text())
    return data


def upgrade_versions() -> dict[str, str]:
    """The newer driver/firmware the mirror also carries, for upgrade-driver.yml."""
    data: dict[str, str] = json.loads((sim_dir() / "upgrade-versions.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def hardware_file(profile: Profile) -> Path | None:
    if profile is Profile.cpu:
        return None
    return sim_dir() / "hardware" / f"{profile.value}.json"


def _tar_dir(src: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname=".")
    return buf.getvalue()


def _run_installer(src: Path, version: str) -> str:
    """A makeself-like shell installer: header + base64 tarball of the asset directory."""
    payload = base64.encodebytes(_tar_dir(src)).decode()
    return (
        "#!/bin/sh\n"
        f"# Simulated installer built by `llmrack lab` from llmrack/lab/data/sim/{src.name} (lab only).\n"
        "set -e\n"
        f"SIM_VERSION={version}\n"
        "TMP=$(mktemp -d)\ntrap 'rm -rf \"$TMP\"' EXIT\n"
        f"sed '1,/^{PAYLOAD_MARK}$/d' \"$0\" | base64 -d | tar -xz -C \"$TMP\"\n"
        'PAYLOAD="$TMP/payload"\n'
        '. "$TMP/install.sh"\n'
        # What ran, in order (a test reads it to check the firmware-then-driver order of an upgrade).
        f'mkdir -p /var/log/llmrack-sim && echo "{src.name} $SIM_VERSION $*" >> /var/log/llmrack-sim/installs.log\n'
        "exit 0\n"
        f"{PAYLOAD_MARK}\n{payload}"
    )


def _built_tree(name: str, version: str, work: Path) -> Path:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    src = sim_dir() / name
    env = {**os.environ, "OUT": str(out), "PAYLOAD": str(src / "payload"), "SIM_VERSION": version}
    subprocess.run(["sh", str(src / "install.sh")], env=env, check=True)
    return out


def _same_every_build(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """The same bytes on every `lab up`: the fabric manager role downloads the archive again (and reports a change)
    whenever its checksum moves, and a build's timestamps would move it."""
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
    return info


def build_mirror(mirror: Path) -> None:
    """Write every simulated installer/archive/package into `mirror` (idempotent, cheap)."""
    vers, upgrades = versions(), upgrade_versions()
    for release in (vers, upgrades):
        for name, (sub, pattern) in RUN_INSTALLERS.items():
            if name not in release:
                continue
            dest = mirror / sub / pattern.format(v=release[name])
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(_run_installer(sim_dir() / name, release[name]))
            dest.chmod(0o755)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for v in {vers["nvidia-fabricmanager"], upgrades["nvidia-fabricmanager"]}:
            top = f"fabricmanager-linux-x86_64-{v}-archive"
            tree = _built_tree("nvidia-fabricmanager", v, work)
            with tarfile.open(mirror / "nvidia" / f"{top}.tar.xz", "w:xz") as tar:
                tar.add(tree, arcname=top, filter=_same_every_build)
        v = vers["nccl-tests"]
        tree = _built_tree("nccl-tests", v, work)
        with gzip.GzipFile(mirror / "nvidia" / NCCL_TESTS_ARCHIVE.format(v=v), "wb", mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w") as tar:
            tar.add(tree, arcname=f"nccl-tests-{v}", filter=_same_every_build)
        v = vers["nvidia-container-toolkit"]
        tree = _built_tree("nvidia-container-toolkit", v, work)
        debs = mirror / "nvidia" / "container-toolkit"
        debs.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "--build", str(tree),
             str(debs / f"nvidia-container-toolkit_{v}-1_amd64.deb")],
            check=True, capture_output=True,
        )
