"""One lab for the whole session: two nodes (sim-ascend with Prometheus, sim-a100), both serving on their CPU.

Booting and converging is the slow part (minutes); every test reads the same converged lab, the re-run
test checks changed=0, and the fixture tears the lab down at the end and checks nothing is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
def lab_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.UpResult]:
    lab_dir = tmp_path_factory.mktemp("lab")
    reason = _podman_works(lab_dir)
    if reason:
        pytest.skip(reason)
    # testinfra's ansible backend and the lab's playbooks use the ansible next to this interpreter. The
    # environment is restored afterwards: a leaked ANSIBLE_CONFIG would point later tests at a removed lab.
    env = pytest.MonkeyPatch()
    env.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        result = lab.up(lab_dir, len(PROFILES), PROFILES)
        print(f"\nlab up ({len(PROFILES)} nodes): " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()))
        env.setenv("ANSIBLE_CONFIG", str(result.state.ansible_cfg))
        yield result
    finally:
        env.undo()
        state = lab.load_state(lab_dir)
        lab.down(lab_dir)
        if state is not None:
            left = Podman(Path(os.environ.get("TMPDIR", "/tmp"))).run(
                "ps", "-a", "-q", "--filter", f"label=llmrack.lab={state.prefix}")
            assert not left.split(), f"containers left after lab down: {left}"
