"""One lab for the whole session: two nodes (sim-ascend with Prometheus, sim-a100), both serving on their CPU.

Booting and converging is the slow part (minutes); every test reads the same converged lab, the re-run
test checks changed=0, and the fixture tears the lab down at the end and checks nothing is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmrack.lab import lab
from llmrack.lab.podman import Podman, PodmanError
from llmrack.lab.state import Profile

PROFILES = [Profile.sim_ascend, Profile.sim_a100]


def _podman_works(tmp: Path) -> str | None:
    """None when podman can run a container here; else why not (the only reason to skip)."""
    if shutil.which("podman") is None:
        return "podman is not installed"
    try:
        Podman(tmp)
    except PodmanError as exc:
        return str(exc)
    proc = subprocess.run(["podman", "info"], capture_output=True, text=True, check=False,
                          env={**os.environ, "CONTAINERS_CONF": str(tmp / "containers.conf")})
    return None if proc.returncode == 0 else f"podman cannot run here: {proc.stderr.strip()[-300:]}"


@contextlib.contextmanager
def running_lab(lab_dir: Path, profiles: list[Profile], **up: Any) -> Iterator[lab.UpResult]:
    """`lab.up` with these node profiles (and `lab.up`'s keyword arguments), torn down afterwards with a check
    that no container is left; skips only where podman cannot run."""
    reason = _podman_works(lab_dir)
    if reason:
        pytest.skip(reason)
    # testinfra's ansible backend and the lab's playbooks use the ansible next to this interpreter.
    env = pytest.MonkeyPatch()
    env.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        result = lab.up(lab_dir, len(profiles), profiles, **up)
        print(f"\nlab up ({len(profiles)} nodes): " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()))
        yield result
    finally:
        env.undo()
        state = lab.load_state(lab_dir)
        lab.down(lab_dir)
        if state is not None:
            left = Podman(Path(os.environ.get("TMPDIR", "/tmp"))).run(
                "ps", "-a", "-q", "--filter", f"label=llmrack.lab={state.prefix}")
            assert not left.split(), f"containers left after lab down: {left}"


@pytest.fixture(scope="session")
def lab_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.UpResult]:
    with running_lab(tmp_path_factory.mktemp("lab"), PROFILES) as result:
        yield result


@pytest.fixture(autouse=True)
def _lab_ansible_config(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """testinfra reads the lab's vault password and SSH settings from $ANSIBLE_CONFIG: set it for each test
    that uses the session lab, and only for that test (a session-wide ANSIBLE_CONFIG would leak into every
    later test module and point it at this lab's config)."""
    if "lab_up" in request.fixturenames:
        result: lab.UpResult = request.getfixturevalue("lab_up")
        monkeypatch.setenv("ANSIBLE_CONFIG", str(result.state.ansible_cfg))
        # The gateway speaks TLS with a certificate of the lab's rack CA: httpx trusts it (and the system's CAs).
        if result.state.rack_ca.exists():
            bundle = result.state.lab_dir / "ca-bundle.crt"
            bundle.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text() + result.state.rack_ca.read_text())
            monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
