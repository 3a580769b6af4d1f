"""The serving role's replica agent (files/llmrack-replica-agent.py), run as on a replica's nodes: one leader agent and
one worker agent talking HTTP. systemd is stood in for by a `systemctl` on PATH that reads each node's unit state
from a file, the engine's health by an HTTP server, and the container kill by a command that records the kill:
the agents' own code is what runs. The lab (tests/lab/test_multinode.py) runs it against real vLLM ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "serving" / "files" / "llmrack-replica-agent.py"

SYSTEMCTL = """#!/bin/sh
# systemctl show -p ActiveState -p InvocationID UNIT, from the node's state file: "STATE INVOCATION"
read st inv < "$STATE_FILE"
echo "ActiveState=$st"
echo "InvocationID=$inv"
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    dir: Path
    port: int

    def set(self, state: str) -> None:
        (self.dir / "state").write_text(state + "\n")

    def kills(self) -> int:
        path = self.dir / "kills"
        return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    health = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    leader, worker = (Node(tmp_path / n, _port()) for n in ("leader", "worker"))
    procs = []
    for node, role in ((worker, ["--role", "worker"]), (leader, [
            "--role", "leader", "--health-url", f"http://127.0.0.1:{health.server_port}/health",
            "--worker", f"node2=http://127.0.0.1:{worker.port}", "--grace", "2"])):
        node.dir.mkdir()
        node.set("active first")
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               "STATE_FILE": str(node.dir / "state")}
        kill = f"sh -c {'echo>>' + str(node.dir / 'kills')}"
        procs.append(subprocess.Popen([sys.executable, str(AGENT), *role, "--bind", "127.0.0.1", "--port",
                                       str(node.port), "--kill", kill, "--interval", "0.2"], env=env,
                                      stderr=subprocess.PIPE, text=True))
    try:
        yield leader, worker
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        health.shutdown()


def _state(node: Node) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/state", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def _until(what: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if what():
                return
        except OSError:  # the agent is not listening yet
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_lost_worker_restarts_the_leader_and_a_new_leader_restarts_old_workers(replica: tuple[Node, Node]) -> None:
    leader, worker = replica
    _until(lambda: bool(_state(leader)["formed"]))
    assert _state(leader)["group"] == {"node2": "first"} and leader.kills() == 0
    # The worker's rank stops: the leader's group cannot take it back, so the leader is killed (once).
    worker.set("inactive -")
    _until(lambda: leader.kills() == 1)
    time.sleep(1)
    assert leader.kills() == 1 and worker.kills() == 0
    # systemd starts the leader again (a new invocation); the worker starts and joins it.
    leader.set("active second")
    worker.set("active rejoined")
    _until(lambda: _state(leader)["invocation"] == "second" and bool(_state(leader)["formed"]))
    assert _state(leader)["group"] == {"node2": "rejoined"}
    # The leader ends (a rollout stops it): the worker attached to it is told to restart, once.
    leader.set("inactive -")
    _until(lambda: worker.kills() == 1)
    time.sleep(1)
    assert worker.kills() == 1 and leader.kills() == 1


def test_a_worker_restarted_behind_the_leaders_back_restarts_the_leader(replica: tuple[Node, Node]) -> None:
    leader, worker = replica
    _until(lambda: bool(_state(leader)["formed"]))
    worker.set("active restarted")  # crashed and started again by systemd: not in the leader's group
    _until(lambda: leader.kills() == 1)
    assert worker.kills() == 0
    # The restarted worker went to the old leader's rendezvous: when that leader's start ends, it restarts too.
    leader.set("active second")
    _until(lambda: worker.kills() == 1)
