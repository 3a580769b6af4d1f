"""One lab for the whole session: two nodes (sim-ascend with Prometheus, sim-a100), both serving on their CPU.

It is started the way the README's main job starts one, `llmrack lab up --nodes 2` in its own process (plus the
two node profiles), and torn down with `llmrack lab down`: the main job's output, resume and tear-down are checked
on this lab (tests/lab/test_main_job.py and the fixture's end) rather than on a second lab of their own. Booting
and converging is the slow part (minutes); every test reads the same converged lab, and the fixture checks at the
end that `lab down` left nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmrack.lab import lab
from llmrack.lab.podman import Podman, PodmanError
from llmrack.lab.state import Profile, prefix_for

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
            podman = Podman(Path(os.environ.get("TMPDIR", "/tmp")))
            label = f"label=llmrack.lab={state.prefix}"
            left = podman.run("ps", "-a", "-q", "--filter", label) + podman.run("volume", "ls", "-q", "--filter", label)
            assert not left.split(), f"containers or volumes left after lab down: {left}"


def llmrack(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """The `llmrack` command in its own process, as a user runs it (no ANSIBLE_CONFIG of a test's)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "llmrack", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


@dataclass
class MainJob(lab.UpResult):
    """The session lab as `llmrack lab up` left it, with what that command printed."""

    stdout: str = ""
    stderr: str = ""
    down: subprocess.CompletedProcess[str] | None = None


@pytest.fixture(scope="session")
def lab_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainJob]:
    lab_dir = tmp_path_factory.mktemp("lab")
    reason = _podman_works(lab_dir)
    if reason:
        pytest.skip(reason)
    profiles = [arg for p in PROFILES for arg in ("--profile", p.value)]
    job: MainJob | None = None
    # testinfra's ansible backend and the tests' playbooks use the ansible next to this interpreter.
    env = pytest.MonkeyPatch()
    env.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        up = llmrack("lab", "up", "--nodes", str(len(PROFILES)), *profiles, "--lab-dir", str(lab_dir))
        state = lab.load_state(lab_dir)
        assert state is not None, up.stderr[-6000:]
        logs = sorted((lab_dir / "logs").glob("site-*.log"))
        job = MainJob(state, up.returncode, state.last_run, logs[-1] if logs else None, stdout=up.stdout,
                      stderr=up.stderr)
        print(f"\nllmrack lab up ({len(PROFILES)} nodes): exit {up.returncode}; "
              + " ".join(line.strip() for line in up.stderr.splitlines() if "site.yml:" in line))
        yield job
    finally:
        env.undo()
        down = llmrack("lab", "down", "--lab-dir", str(lab_dir))
        if job is not None:
            job.down = down
    assert down.returncode == 0, down.stderr
    # Says what it keeps (the caches) and how to remove them; leaves no container, volume, network or lab dir.
    assert "podman image rm" in down.stderr and "localhost/llmrack-lab-node:bookworm" in down.stderr, down.stderr
    assert "localhost/llmrack-serving:" in down.stderr and "rm -rf " in down.stderr, down.stderr
    podman = Podman(Path(os.environ.get("TMPDIR", "/tmp")))
    label = f"label=llmrack.lab={prefix_for(lab_dir)}"
    assert not podman.run("ps", "-a", "-q", "--filter", label).split(), "containers left after lab down"
    assert not podman.run("volume", "ls", "-q", "--filter", label).split(), "volumes left after lab down"
    assert prefix_for(lab_dir) not in podman.run("network", "ls", "--format", "{{.Name}}").split()
    assert not lab_dir.exists()


# The labs tests run against: the session lab, and the multi-node lab of tests/lab/test_multinode.py.
LAB_FIXTURES = ("lab_up", "replica")


@pytest.fixture(autouse=True)
def _lab_ansible_config(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """testinfra reads the lab's vault password and SSH settings from $ANSIBLE_CONFIG: set it for each test
    that uses a lab, and only for that test (a session-wide ANSIBLE_CONFIG would leak into every
    later test module and point it at this lab's config)."""
    for name in LAB_FIXTURES:
        if name not in request.fixturenames:
            continue
        result: lab.UpResult = request.getfixturevalue(name)
        monkeypatch.setenv("ANSIBLE_CONFIG", str(result.state.ansible_cfg))
        # The gateway speaks TLS with a certificate of the lab's rack CA: httpx trusts it (and the system's CAs).
        if result.state.rack_ca.exists():
            bundle = result.state.lab_dir / "ca-bundle.crt"
            bundle.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text() + result.state.rack_ca.read_text())
            monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
