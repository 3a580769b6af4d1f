"""The serving role's replica agent (files/llmrack-replica-agent.py), run as on a replica's nodes: one leader agent and
one worker agent talking HTTP. systemd is stood in for by a `systemctl` on PATH that reads each node's unit state
from a file, the engine's health by an HTTP server, and the container kill by a command that records the kill:
the agents' own code is what runs. The lab (tests/lab/test_multinode.py) runs it against real vLLM ranks."""

from __future__ import annotations

import json
import os
import signal
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
from typing import Any
from urllib.error import HTTPError

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


class Rack:
    """The agents of one replica: a leader's and its workers', each a real process of the agent on its own port
    with its own stand-in unit state; an agent can be stopped (its node lost) and started again."""

    def __init__(self, tmp_path: Path, workers: int, **leader_opts: str) -> None:
        self.bin_dir = tmp_path / "bin"
        self.bin_dir.mkdir()
        (self.bin_dir / "systemctl").write_text(SYSTEMCTL)
        (self.bin_dir / "systemctl").chmod(0o755)

        self.health_file = tmp_path / "health"
        self.health_file.write_text("200")
        health_file = self.health_file

        class Health(BaseHTTPRequestHandler):  # the leader's engine: 200 once its ranks have joined
            def do_GET(self) -> None:
                self.send_response(int(health_file.read_text()))
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.health = HTTPServer(("127.0.0.1", 0), Health)
        threading.Thread(target=self.health.serve_forever, daemon=True).start()
        self.leader = Node(tmp_path / "leader", _port())
        self.workers = [Node(tmp_path / f"worker{i + 2}", _port()) for i in range(workers)]
        self.leader_opts = {"--grace": "2", **leader_opts}
        self.procs: dict[int, subprocess.Popen[str]] = {}
        for node in (self.leader, *self.workers):
            node.dir.mkdir()
            node.set("active first")

    def _argv(self, node: Node) -> list[str]:
        if node is not self.leader:
            return ["--role", "worker", "--leader-grace", "1.5", "--attach-after", "0.6"]
        argv = ["--role", "leader", "--health-url", f"http://127.0.0.1:{self.health.server_port}/health"]
        for i, w in enumerate(self.workers):
            argv += ["--worker", f"node{i + 2}=http://127.0.0.1:{w.port}"]
        return argv + [x for kv in self.leader_opts.items() for x in kv]

    def start(self, node: Node) -> None:
        env = {**os.environ, "PATH": f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}",
               "STATE_FILE": str(node.dir / "state")}
        kill = f"sh -c {'echo>>' + str(node.dir / 'kills')}"
        self.procs[node.port] = subprocess.Popen(
            [sys.executable, str(AGENT), *self._argv(node), "--bind", "127.0.0.1", "--port", str(node.port),
             "--kill", kill, "--interval", "0.2"], env=env, stderr=subprocess.PIPE, text=True)

    def stop(self, node: Node) -> None:
        proc = self.procs.pop(node.port)
        proc.terminate()
        proc.wait(timeout=10)

    def engine(self, status: int) -> None:
        self.health_file.write_text(str(status))

    def cut(self, node: Node, off: bool = True) -> None:
        """The node cut off from the network and back: its agent frozen (SIGSTOP), its memory kept."""
        self.procs[node.port].send_signal(signal.SIGSTOP if off else signal.SIGCONT)

    def close(self) -> None:
        for port in list(self.procs):
            proc = self.procs.pop(port)
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait(timeout=10)
        self.health.shutdown()


@pytest.fixture
def rack(tmp_path: Path) -> Iterator[Callable[..., Rack]]:
    made: list[Rack] = []

    def make(workers: int = 1, start: bool = True, **leader_opts: str) -> Rack:
        r = Rack(tmp_path, workers, **leader_opts)
        made.append(r)
        if start:
            for node in (*r.workers, r.leader):  # workers before the leader, as the role starts them
                r.start(node)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def replica(rack: Callable[..., Rack]) -> tuple[Node, Node]:
    r = rack()
    return r.leader, r.workers[0]


def _state(node: Node) -> dict[str, Any]:
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


def _health(node: Node) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/health", timeout=5) as resp:
            return int(resp.status)
    except HTTPError as exc:
        return exc.code


def test_the_leaders_node_lost_resets_the_workers_and_the_replica_forms_again_when_it_returns(
        rack: Callable[..., Rack]) -> None:
    r = rack(workers=2)
    leader, w2, w3 = r.leader, *r.workers
    _until(lambda: bool(_state(leader)["formed"]))
    _until(lambda: _state(w2)["attached"] == "first" and _state(w3)["attached"] == "first")
    # The leader's node goes away with its agent: no one polls the workers. Each notices (--leader-grace) and
    # resets its rank once, so that its next start waits for a leader instead of holding the dead group.
    r.stop(leader)
    _until(lambda: w2.kills() == 1 and w3.kills() == 1)
    w2.set("active w2-second")  # systemd starts the killed ranks again
    w3.set("active w3-second")
    time.sleep(2)
    assert (w2.kills(), w3.kills()) == (1, 1)  # once: the new ranks have joined no leader yet
    # The node comes back: a new start of the leader, a fresh agent. The workers join it; the replica forms.
    leader.set("active after-reboot")
    r.start(leader)
    _until(lambda: bool(_state(leader)["formed"]) and _health(leader) == 200)
    assert _state(leader)["group"] == {"node2": "w2-second", "node3": "w3-second"}
    assert _state(w2)["attached"] == "after-reboot" and leader.kills() == 0
    assert (w2.kills(), w3.kills()) == (1, 1)


def test_a_leader_back_before_its_workers_noticed_still_gets_fresh_ranks(rack: Callable[..., Rack]) -> None:
    """The leader's node rebooted faster than --leader-grace: its new agent knows nothing of the old group, the
    workers see a leader start other than the one their ranks joined and reset themselves."""
    r = rack(workers=1)
    leader, worker = r.leader, r.workers[0]
    _until(lambda: bool(_state(leader)["formed"]))
    r.stop(leader)
    r.engine(503)  # the new start waits for its ranks
    leader.set("active rebooted")
    r.start(leader)
    _until(lambda: worker.kills() == 1)
    assert not _state(leader)["formed"]  # the old rank is not taken into the new group
    worker.set("active fresh")
    r.engine(200)  # the fresh rank joined
    _until(lambda: bool(_state(leader)["formed"]))
    assert _state(leader)["group"] == {"node2": "fresh"} and worker.kills() == 1 and leader.kills() == 0


def test_a_worker_unreachable_at_start_keeps_the_replica_unready_until_it_answers(rack: Callable[..., Rack]) -> None:
    r = rack(workers=2, start=False, **{"--form-timeout": "2"})
    leader, w2, w3 = r.leader, *r.workers
    r.start(w2)
    r.start(leader)  # node3's agent (its node) does not answer
    _until(lambda: _state(leader)["workers"]["node3"] is None)
    assert not _state(leader)["formed"] and _health(leader) == 503
    # The start cannot form without node3's rank: after --form-timeout it is restarted (once per timeout).
    _until(lambda: leader.kills() == 1, timeout=6)
    assert _health(leader) == 503 and w2.kills() == 0
    # systemd's next start of the leader; node3 comes up and its rank joins: the replica forms, complete.
    # node2's rank, which had waited at the killed start's rendezvous, is reset to join the new one.
    leader.set("active second")
    r.start(w3)
    _until(lambda: w2.kills() == 1)
    w2.set("active w2-second")
    _until(lambda: _health(leader) == 200)
    assert _state(leader)["group"] == {"node2": "w2-second", "node3": "first"} and w3.kills() == 0


def test_a_replica_of_three_nodes_restarts_whole_when_one_worker_is_cut_off(rack: Callable[..., Rack]) -> None:
    r = rack(workers=2)
    leader, w2, w3 = r.leader, *r.workers
    _until(lambda: _health(leader) == 200)
    assert _state(leader)["group"] == {"node2": "first", "node3": "first"}
    r.cut(w3)  # node3 is cut off: its agent silent for --grace polls (each waits 3 s for an answer)
    _until(lambda: leader.kills() == 1, timeout=15)
    assert _health(leader) == 503
    leader.set("active second")  # systemd starts the leader again: node2's rank, attached to the old start, resets
    _until(lambda: w2.kills() == 1)
    w2.set("active w2-second")
    r.cut(w3, off=False)  # node3 back, its rank still attached to the old start: it resets itself
    _until(lambda: w3.kills() == 1)
    w3.set("active w3-second")
    _until(lambda: _health(leader) == 200)
    assert _state(leader)["group"] == {"node2": "w2-second", "node3": "w3-second"}
    assert (leader.kills(), w2.kills(), w3.kills()) == (1, 1, 1)
