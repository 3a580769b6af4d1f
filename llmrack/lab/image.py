"""The lab's node image: a minimal Debian 12 with systemd and sshd, built once with debootstrap and cached.

No container registry is reachable here, so the image is built from Debian packages and imported into
podman's local storage. It is the only thing `llmrack lab down` keeps.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from llmrack.lab.podman import Podman, PodmanError

IMAGE = "localhost/llmrack-lab-node:bookworm"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ["python3", "openssh-server", "systemd-sysv", "sudo"]

# Units that have nothing to do in a container and only slow the boot or fail it.
MASKED_UNITS = [
    "getty@tty1.service", "console-getty.service", "systemd-udevd.service", "systemd-udev-trigger.service",
    "systemd-modules-load.service", "sys-kernel-config.mount", "sys-kernel-debug.mount",
    "systemd-remount-fs.service", "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
]


def image_exists(podman: Podman) -> bool:
    return podman.ok("image", "exists", IMAGE)


def _customise(root: Path, mirror: str) -> None:
    (root / "etc/apt/sources.list").write_text(
        f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
    )
    # Keep the image small and apt quiet: no docs, no recommends (like a cloud image).
    (root / "etc/apt/apt.conf.d/90llmrack-lab").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
    )
    for unit in MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    sshd = root / "etc/ssh/sshd_config.d/llmrack-lab.conf"
    sshd.write_text("PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n")
    # Host keys are generated per node at first boot, not baked into the shared image.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    keygen = root / "etc/systemd/system/ssh-keygen-lab.service"
    keygen.write_text(
        "[Unit]\nDescription=Generate SSH host keys\nBefore=ssh.service\n"
        "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n[Install]\nWantedBy=multi-user.target\n"
    )
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "ssh-keygen-lab.service").unlink(missing_ok=True)
    (wants / "ssh-keygen-lab.service").symlink_to("/etc/systemd/system/ssh-keygen-lab.service")
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    (root / "etc/machine-id").write_text("")
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def build_image(podman: Podman, work_dir: Path, mirror: str = DEFAULT_MIRROR,
                log: Callable[[str], None] = lambda _m: None) -> str:
    """Build and import the node image unless it is cached; returns the image name."""
    if image_exists(podman):
        log(f"node image {IMAGE} is cached")
        return IMAGE
    if shutil.which("debootstrap") is None:
        raise PodmanError("debootstrap is not installed (scripts/setup.sh installs it)")
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=work_dir) as tmp:
        root = Path(tmp) / "rootfs"
        log("debootstrap: building a Debian 12 root file system (about a minute)")
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), mirror],
            capture_output=True, check=False,
        )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).decode(errors="replace")[-2000:]
            raise PodmanError(f"debootstrap failed (exit {proc.returncode}):\n{tail}")
        _customise(root, mirror)
        log(f"importing the root file system as {IMAGE}")
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        imp = subprocess.run(
            [podman.exe, "import", "--change", 'CMD ["/sbin/init"]', "--change", "STOPSIGNAL SIGRTMIN+3",
             "-", IMAGE],
            stdin=tar.stdout, env=podman.env(), capture_output=True, check=False,
        )
        tar.stdout.close()
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise PodmanError(f"podman import failed: {imp.stderr.decode(errors='replace')[-2000:]}")
    return IMAGE
