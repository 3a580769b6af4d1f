"""A thin wrapper over the podman CLI, with the settings this kind of machine needs.

podman's defaults fail in nested sandboxes in two ways (see docs/lab.md): the default ulimits cannot be
raised there, and crun does not support hybrid cgroups. Every call here therefore runs with a
containers.conf that clears `default_ulimits` and with `--runtime runc` on `run`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from llmrack.errors import LlmrackError

CONTAINERS_CONF = """\
# Written by llmrack lab: podman's default ulimits cannot be raised inside some sandboxes.
[containers]
default_ulimits = []
"""


class PodmanError(LlmrackError):
    """podman is missing or a podman command failed."""


class Podman:
    def __init__(self, conf_dir: Path) -> None:
        exe = shutil.which("podman")
        if exe is None:
            raise PodmanError("podman is not installed (scripts/setup.sh installs it: apt-get install podman runc)")
        self.exe = exe
        conf_dir.mkdir(parents=True, exist_ok=True)
        self.conf = conf_dir / "containers.conf"
        if not self.conf.exists() or self.conf.read_text() != CONTAINERS_CONF:
            self.conf.write_text(CONTAINERS_CONF)

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True, input_bytes: bytes | None = None) -> str:
        proc = subprocess.run(
            [self.exe, *args], env=self.env(), input=input_bytes, capture_output=True, check=False
        )
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise PodmanError(f"podman {' '.join(args[:3])} ... failed (exit {proc.returncode}): {err[-2000:]}")
        return proc.stdout.decode(errors="replace")

    def ok(self, *args: str) -> bool:
        return subprocess.run([self.exe, *args], env=self.env(), capture_output=True, check=False).returncode == 0

    def inspect(self, name: str) -> dict[str, Any] | None:
        out = subprocess.run(
            [self.exe, "container", "inspect", name], env=self.env(), capture_output=True, check=False
        )
        if out.returncode != 0:
            return None
        data = json.loads(out.stdout)
        return data[0] if data else None
