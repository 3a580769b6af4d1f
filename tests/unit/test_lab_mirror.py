"""The lab's mirror is rebuilt on every `llmrack lab up`: its archives must come out byte for byte the same, or the
roles that download them by checksum (the fabric manager's) report a change on a lab that changed nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from llmrack.lab import sim


def _digests(mirror: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((mirror / "nvidia").glob("*.tar.xz"))}


def test_mirror_archives_are_the_same_bytes_every_build(tmp_path: Path) -> None:
    sim.build_mirror(tmp_path / "a")
    sim.build_mirror(tmp_path / "b")
    first = _digests(tmp_path / "a")
    assert first and first == _digests(tmp_path / "b")
