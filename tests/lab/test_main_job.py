"""The main job end to end, as a newcomer runs it: `llmrack lab up --nodes 2` (the README's `make lab`).

The session lab is that command (tests/lab/conftest.py, with the two simulated node profiles): node image ->
serving image and tiny model -> scan gate (unscanned, allowed loudly in the lab) -> the image pushed to the lab's
registry -> boot -> site.yml -> `llmrack validate` -> where to look. Here what it printed is used for real: the
completion through the gateway and through each node's port with the API key, the report files. A second `up`
resuming rather than rebuilding is tests/lab/test_lab.py's last test; `lab down` leaving nothing behind is checked
when the fixture ends.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.lab.conftest import MainJob, llmrack

pytestmark = pytest.mark.lab


def test_lab_up_prints_what_works_and_validates(lab_up: MainJob) -> None:
    assert lab_up.rc == 0, lab_up.stdout[-3000:] + lab_up.stderr[-6000:]
    assert "The lab is up." in lab_up.stdout
    assert "scan gate" in lab_up.stdout and "never passed a vulnerability scan" in lab_up.stdout  # loudly unscanned
    assert "Prometheus UI: http://127.0.0.1:" in lab_up.stdout
    lab_dir = lab_up.state.lab_dir
    status = json.loads(llmrack("lab", "status", "--json", "--lab-dir", str(lab_dir)).stdout)
    # One curl, the last thing printed: the rack's endpoint (the gateway), not a node.
    assert lab_up.stdout.count("curl -s https://127.0.0.1:") == 1, lab_up.stdout
    last = lab_up.stdout.rstrip().splitlines()[-1].lstrip()
    assert last.startswith(f"curl -s {status['gateway_url']}/v1/"), lab_up.stdout
    key = Path(status["api_key_file"]).read_text().strip()
    for url in [status["gateway_url"], *(node["serving_url"] for node in status["nodes"])]:
        r = httpx.post(f"{url}/v1/completions", timeout=60, headers={"Authorization": f"Bearer {key}"},
                       json={"model": "tiny", "prompt": "Hello", "max_tokens": 8})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 8

    report = lab_dir / "validation"
    assert {"report.json", "junit.xml", "report.html"} <= {p.name for p in report.iterdir()}
    checks = json.loads((report / "report.json").read_text())["checks"]
    assert checks and not [c["id"] for c in checks if c["status"] in ("fail", "error")]
    assert {"node1", "node2"} <= {c["id"].split("[")[-1].split("-")[0].rstrip("]") for c in checks}
