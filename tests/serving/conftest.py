"""Fixtures for the serving tests: tiny models made once per session, real servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch._dynamo  # noqa: F401  # see below

from serving import readiness
from serving.model.tiny import Arch, make_tiny

# Why torch._dynamo is imported at collection time: other test modules import ansible, which replaces sys.intern
# with a callable object; torch._dynamo, when first imported after that (transformers does it lazily while loading
# a model), refuses to register its polyfill for sys.intern and raises TypeError. Importing it first avoids the clash.

ARCHS = [a.value for a in Arch]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    # The CI box has 2 cores shared with other jobs; torch's spinning worker threads then slow the tiny models
    # down ~3x. One thread keeps the suite fast and stable (the benchmark, not the tests, measures speed).
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {arch: make_tiny(arch, root / f"tiny-{arch}", seed=0) for arch in ARCHS}


@pytest.fixture(scope="session")
def qwen2_dir(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["qwen2"]


_loaded_cache: dict[str, Any] = {}


@pytest.fixture(scope="session")
def load_model(tiny_models: dict[str, Path]) -> Any:
    """Load (once per session and arch) a tiny model on CPU in float32."""
    from serving.model.loader import load

    def get(arch: str) -> Any:
        if arch not in _loaded_cache:
            _loaded_cache[arch] = load(tiny_models[arch])
        return _loaded_cache[arch]

    return get


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """The real app under a real uvicorn server, in a background thread of the test process."""

    def __init__(self, model: Path, **settings: Any) -> None:
        import uvicorn

        from serving.app import create_app
        from serving.settings import ServingSettings
        from serving.state import ServerState

        self.port = free_port()
        self.settings = ServingSettings(model=model, host="127.0.0.1", port=self.port, **settings)
        self.state = ServerState(self.settings)
        app = create_app(self.settings, self.state)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_ready(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def wait_ready(url: str, timeout: float = 60.0) -> None:
    readiness.wait_ready(url, timeout, interval=0.1)


@pytest.fixture(scope="module")
def server(qwen2_dir: Path) -> Iterator[ThreadServer]:
    with ThreadServer(qwen2_dir, max_num_seqs=8, max_model_len=1024, max_queue=64) as srv:
        yield srv
