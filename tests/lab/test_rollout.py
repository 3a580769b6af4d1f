"""A new serving release, a new image AND a new model version, rolled across the lab one node at a time (the
service never fully down), then rollback.yml back to the previous image and model pair, then a no-op serving.yml:
the lab is where it started. The image comes the way a site without a registry gets it (an OCI archive on the
mirror; the lab's default, its registry, carries test_gateway.py's releases), the model version from the lab's
registry by digest."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from llmrack.contracts.model_manifest import version_hex
from llmrack.lab import lab, registry, releases
from tests.lab.hosts import host_of
from tests.lab.test_models import AGENT, STORE, lab_model, new_version, serving

pytestmark = pytest.mark.lab

HISTORY = "/var/lib/llmrack/images/history.json"
UNIT = "/etc/systemd/system/llmrack-serving.service"


class ReadyWatch:
    """Polls every node's /ready while a playbook runs: one row of answers per round."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.rounds: list[dict[str, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._stop.is_set():
                row = {}
                for name, url in self.urls.items():
                    try:
                        row[name] = client.get(f"{url}/ready").status_code == 200
                    except httpx.HTTPError:
                        row[name] = False
                self.rounds.append(row)
                time.sleep(0.2)

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def down_window(self, name: str) -> tuple[int, int]:
        down = [i for i, row in enumerate(self.rounds) if not row[name]]
        assert down, f"{name} never went down: it was not restarted"
        return down[0], down[-1]


def _deployed(result: lab.UpResult) -> dict[str, tuple[list[str], str]]:
    """node -> (its deployment history, the unit's ExecStart line naming the image it runs)."""
    out = {}
    for node in result.state.nodes:
        host = host_of(result, node.name)
        unit = next(line for line in host.file(UNIT).content_string.splitlines() if "llmrack.local/serving@" in line)
        out[node.name] = (json.loads(host.file(HISTORY).content_string), unit)
    return out


def test_new_release_rolls_one_node_at_a_time_and_rolls_back(lab_up: lab.UpResult, tmp_path: Path) -> None:
    lab_dir = lab_up.state.lab_dir
    names = [n.name for n in lab_up.state.nodes]
    before = _deployed(lab_up)
    first = before[names[0]][0][0]
    assert all(history[0] == first and first in unit for history, unit in before.values()), before
    v1 = serving(lab_up, names[0])["releases"][0]["model"]
    for n in names:
        s = serving(lab_up, n)
        assert s["releases"][0] == {"image": first, "model": v1} and version_hex(v1) in s["mount"], (n, s)
        host_of(lab_up, n).check_output(f"{AGENT} verify --dir {STORE}/{version_hex(v1)} --level standard")

    release = releases.make_release(lab_up.state, "2", via="archive")
    second = release.digest
    reg = registry.load(lab_up.state)
    assert reg is not None, "the lab started no registry"
    v2 = new_version(lab_model(lab_up), tmp_path, 2, reg)

    with ReadyWatch({n.name: n.serving_url for n in lab_up.state.nodes}) as watch:
        rolled = lab.provision(lab_dir, "serving.yml", [*release.extra_vars, "-e", f"serving_model_version={v2}"])
    assert rolled.rc == 0, f"see {rolled.log}"
    assert all(c["changed"] > 0 for c in rolled.recap.values()), rolled.recap
    # Never fully down, and one node at a time: each node's outage ends before the next one's begins.
    assert all(any(row.values()) for row in watch.rounds), "every node was down at the same moment"
    windows = sorted(watch.down_window(name) for name in names)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(windows)), windows
    after = _deployed(lab_up)
    assert all(history[:2] == [second, first] and second in unit for history, unit in after.values()), after
    for n in names:  # the model pulled in the prepare half, switched in the rollout half
        s = serving(lab_up, n)
        assert s["releases"][:2] == [{"image": second, "model": v2}, {"image": first, "model": v1}], (n, s)
        assert version_hex(v2) in s["mount"], (n, s)

    # rollback.yml returns to the previous image AND model pair.
    back = lab.provision(lab_dir, "rollback.yml")
    assert back.rc == 0, f"see {back.log}"
    restored = _deployed(lab_up)
    assert all(history[:2] == [first, second] and first in unit for history, unit in restored.values()), restored
    for node in lab_up.state.nodes:
        s = serving(lab_up, node.name)
        assert s["releases"][0] == {"image": first, "model": v1} and version_hex(v1) in s["mount"], s
        assert httpx.get(f"{node.serving_url}/ready", timeout=10).status_code == 200

    # Back on the inventory's release: serving.yml has nothing to do.
    steady = lab.provision(lab_dir, "serving.yml")
    assert steady.rc == 0, f"see {steady.log}"
    assert {h: c["changed"] for h, c in steady.recap.items()} == dict.fromkeys(names, 0), steady.recap
