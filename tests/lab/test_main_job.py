"""The main job end to end, as a newcomer runs it: `llmrack lab up --nodes 2` (the README's `make lab`).

A real CLI process: node image -> serving image and tiny model -> scan gate (unscanned, allowed loudly in the
lab) -> boot -> site.yml -> `llmrack validate` -> where to look. Then what it printed is used for real (the
completion through the gateway and through each node's port with the API key, the report files), a second `up`
resumes rather than rebuilding, and `lab down` leaves no container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from llmrack.lab.podman import Podman
from llmrack.lab.state import prefix_for
from tests.lab.conftest import _podman_works

pytestmark = pytest.mark.lab


def llmrack(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "llmrack", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def test_lab_up_serves_and_validates_then_resumes_and_tears_down(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    reason = _podman_works(lab_dir)
    if reason:
        pytest.skip(reason)
    try:
        up = llmrack("lab", "up", "--nodes", "2", "--lab-dir", str(lab_dir))
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-6000:]
        assert "The lab is up." in up.stdout
        assert "scan gate" in up.stdout and "never passed a vulnerability scan" in up.stdout  # loudly unscanned
        assert "Prometheus UI: http://127.0.0.1:" in up.stdout

        status = json.loads(llmrack("lab", "status", "--json", "--lab-dir", str(lab_dir)).stdout)
        # One curl, the last thing printed: the rack's endpoint (the gateway), not a node.
        assert up.stdout.count("curl -s https://127.0.0.1:") == 1, up.stdout
        last = up.stdout.rstrip().splitlines()[-1].lstrip()
        assert last.startswith(f"curl -s {status['gateway_url']}/v1/"), up.stdout
        key = Path(status["api_key_file"]).read_text().strip()
        for url in [status["gateway_url"], *(node["serving_url"] for node in status["nodes"])]:
            r = httpx.post(f"{url}/v1/completions", timeout=60,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": "tiny", "prompt": "Hello", "max_tokens": 8})
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] == 8

        report = lab_dir / "validation"
        assert {"report.json", "junit.xml", "report.html"} <= {p.name for p in report.iterdir()}
        checks = json.loads((report / "report.json").read_text())["checks"]
        assert checks and not [c["id"] for c in checks if c["status"] in ("fail", "error")]
        assert {"node1", "node2"} <= {c["id"].split("[")[-1].split("-")[0].rstrip("]") for c in checks}

        again = llmrack("lab", "up", "--nodes", "2", "--lab-dir", str(lab_dir), "--no-validate")
        assert again.returncode == 0, again.stderr[-4000:]
        assert "is cached" in again.stderr and "changed=0" in again.stderr  # resumed: nothing rebuilt or changed
    finally:
        down = llmrack("lab", "down", "--lab-dir", str(lab_dir))
    assert down.returncode == 0, down.stderr
    # Says what it keeps (the caches) and how to remove them.
    assert "podman image rm" in down.stderr and "localhost/llmrack-lab-node:bookworm" in down.stderr, down.stderr
    assert "localhost/llmrack-serving:" in down.stderr and "rm -rf " in down.stderr, down.stderr
    left = Podman(tmp_path).run("ps", "-a", "-q", "--filter", f"label=llmrack.lab={prefix_for(lab_dir)}")
    assert not left.split(), f"containers left after lab down: {left}"
    networks = Podman(tmp_path).run("network", "ls", "--format", "{{.Name}}").split()
    assert prefix_for(lab_dir) not in networks and not lab_dir.exists()
