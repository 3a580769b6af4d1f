from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images.clair_server import Behaviour, FakeClair, start

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clair() -> Iterator[FakeClair]:
    fake = FakeClair(Behaviour())
    server = start(fake)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def llmrack(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "llmrack", *args], capture_output=True, text=True, cwd=cwd,
                          check=False, env={**os.environ, **(env or {})}, timeout=300)
