"""A new serving release rolled across the lab one node at a time (the service never fully down), then
rollback.yml back to the previous one, then a no-op serving.yml: the lab is where it started."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import tarfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from llmrack.lab import lab
from tests.lab.hosts import host_of

pytestmark = pytest.mark.lab

HISTORY = "/var/lib/llmrack/images/history.json"
UNIT = "/etc/systemd/system/llmrack-serving.service"


def second_release(src: Path, dst: Path, revision: str) -> str:
    """A second release of the lab's serving image: the same config and layers under a manifest with one more
    annotation, so a new manifest digest (what the serving role pins and runs by). Returns that digest."""
    with tarfile.open(src) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        entry = index["manifests"][0]
        old = tar.extractfile(f"blobs/sha256/{entry['digest'].split(':', 1)[1]}").read()  # type: ignore[union-attr]
        manifest = json.loads(old)
        manifest.setdefault("annotations", {})["org.opencontainers.image.revision"] = revision
        blob = json.dumps(manifest, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        entry.update(digest=digest, size=len(blob))
        ref = entry.setdefault("annotations", {}).get("org.opencontainers.image.ref.name", "llmrack-serving")
        entry["annotations"]["org.opencontainers.image.ref.name"] = f"{ref.split(':')[0]}:{revision}"
        new_files = {"index.json": json.dumps(index).encode(), f"blobs/sha256/{digest.split(':', 1)[1]}": blob}
        partial = dst.with_name(dst.name + ".part")
        with tarfile.open(partial, "w") as out:
            for member in tar:
                if member.name in new_files:
                    continue
                out.addfile(member, tar.extractfile(member) if member.isfile() else None)
            for name, data in new_files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                out.addfile(info, io.BytesIO(data))
    partial.chmod(0o644)
    partial.replace(dst)
    return digest


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


def test_new_release_rolls_one_node_at_a_time_and_rolls_back(lab_up: lab.UpResult) -> None:
    lab_dir = lab_up.state.lab_dir
    names = [n.name for n in lab_up.state.nodes]
    before = _deployed(lab_up)
    first = before[names[0]][0][0]
    assert all(history[0] == first and first in unit for history, unit in before.values()), before

    serving_dir = lab_dir / "mirror" / "serving"
    [archive] = [p for p in serving_dir.glob("*.oci.tar") if not p.name.startswith("release-")]
    second = second_release(archive, serving_dir / "release-2.oci.tar", "release-2")
    new_vars = ["-e", f"serving_image_digest={second}",
                "-e", "serving_image_archive_url=file:///srv/mirror/serving/release-2.oci.tar"]

    with ReadyWatch({n.name: n.serving_url for n in lab_up.state.nodes}) as watch:
        rolled = lab.provision(lab_dir, "serving.yml", new_vars)
    assert rolled.rc == 0, f"see {rolled.log}"
    assert all(c["changed"] > 0 for c in rolled.recap.values()), rolled.recap
    # Never fully down, and one node at a time: each node's outage ends before the next one's begins.
    assert all(any(row.values()) for row in watch.rounds), "every node was down at the same moment"
    windows = sorted(watch.down_window(name) for name in names)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(windows)), windows
    after = _deployed(lab_up)
    assert all(history[:2] == [second, first] and second in unit for history, unit in after.values()), after

    back = lab.provision(lab_dir, "rollback.yml")
    assert back.rc == 0, f"see {back.log}"
    restored = _deployed(lab_up)
    assert all(history[:2] == [first, second] and first in unit for history, unit in restored.values()), restored
    for node in lab_up.state.nodes:
        assert httpx.get(f"{node.serving_url}/ready", timeout=10).status_code == 200

    # Back on the inventory's release: serving.yml has nothing to do.
    steady = lab.provision(lab_dir, "serving.yml")
    assert steady.rc == 0, f"see {steady.log}"
    assert {h: c["changed"] for h, c in steady.recap.items()} == dict.fromkeys(names, 0), steady.recap
