#!/usr/bin/python3
"""Keeps the ranks of one serving replica that spans several nodes in step (installed by the serving role on
every node of such a replica; stdlib only).

vLLM's multi-node launcher (mp executor) forms one group when the leader (rank 0, which serves HTTP) and every
headless worker have joined, and cannot re-admit a rank into a running group:
- a worker that dies leaves the leader answering /health while every request waits for that worker's pipeline
  stage until VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS (300 s), then fails with 500;
- a leader that dies leaves its workers waiting for the next step forever, and a new leader waits for ranks that
  never join.

So, on the leader's node (--role leader), every second:
- the group formed: the leader's engine answered its health path once in this start of its unit (systemd's
  InvocationID), every worker's agent answered and says its rank joined this start. The workers' unit
  invocations at that moment are the group.
- a worker of the group gone (its unit stopped or restarted, or its agent silent for --grace polls): the leader's
  container is killed (SIGKILL: requests in flight end at once, the gateway's health check sees the port closed
  and answers 503) and systemd starts it again (Restart=on-failure); the new leader waits for its workers.
- the leader's own start ended (stopped, killed, restarted): every worker start seen while it ran may be attached
  to it, so each is killed through its agent (POST /kill names the worker's invocation: a worker started since
  is left alone) and systemd starts it again, to join the next leader.
- a start of the leader that has not formed the replica after --form-timeout seconds (a rank that went away
  during the rendezvous) is killed too.
On a worker's node (--role worker): answers GET /state (its unit's state; the leader's agent polls it every second
and names the leader's current start, ?leader=INVOCATION) and POST /kill, and watches the leader:
- the leader start its rank joined (the first one the leader's polls name for --attach-after seconds after the rank
  started: a poll read just before the leader restarted names a start that is already gone) has ended and another
  is running: the rank is killed, to join the new one (a leader whose node was lost, and its agent with it,
  cannot ask);
- the leader's agent has not polled for --leader-grace seconds (the leader's node is lost or cut off): the rank is
  killed once, so that its next start waits for the leader to come back instead of holding a group that is gone.

GET /health on the leader's agent: 200 when the group is formed and complete, else 503, with the state as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Unit:
    """The serving unit on this node and the container it runs."""

    def __init__(self, unit: str, kill_argv: list[str]) -> None:
        self.unit = unit
        self.kill_argv = kill_argv

    def state(self) -> dict[str, Any]:
        out = subprocess.run(["systemctl", "show", "-p", "ActiveState", "-p", "InvocationID", self.unit],
                             capture_output=True, text=True, check=False, timeout=10).stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        active = props.get("ActiveState") == "active"
        return {"active": active, "invocation": props.get("InvocationID", "") if active else ""}

    def kill(self, why: str) -> None:
        log(f"killing the serving container: {why}")
        subprocess.run(self.kill_argv, check=False, timeout=30)


def _get(url: str, timeout: float) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body.startswith(b"{") else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def _post(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class Leader:
    def __init__(self, unit: Unit, health_url: str, workers: dict[str, str], grace: int,
                 form_timeout: float) -> None:
        self.unit = unit
        self.form_timeout = form_timeout
        self.started = 0.0
        self.health_url = health_url
        self.workers = workers  # name -> http://address:port of its agent
        self.grace = grace
        self.invocation = ""
        self.formed = False
        self.group: dict[str, str] = {}  # worker -> its unit invocation when the group formed
        self.seen: dict[str, set[str]] = {}  # worker -> invocations seen while this leader start ran
        self.missing: dict[str, int] = {}
        self.worker_state: dict[str, dict[str, Any] | None] = {}
        self.killed_at = 0.0  # a kill is repeated only if the leader's start has not ended 10 s later
        self.lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            complete = self.formed and all(
                (s or {}).get("active") and (s or {}).get("invocation") == self.group.get(w)
                for w, s in self.worker_state.items())
            return {"role": "leader", "invocation": self.invocation, "formed": self.formed, "complete": complete,
                    "group": dict(self.group), "workers": dict(self.worker_state)}

    def _release_workers(self) -> None:
        """The leader start the workers may be attached to has ended: each is killed, to join the next one."""
        for name, invocations in self.seen.items():
            for inv in invocations:
                status = _post(f"{self.workers[name]}/kill?invocation={inv}", timeout=5)
                log(f"leader start {self.invocation or '-'} ended: asked {name} to restart its rank "
                    f"({inv}): {status}")
        self.seen = {}

    def poll(self) -> None:
        me = self.unit.state()
        states: dict[str, dict[str, Any] | None] = {}
        for name, url in self.workers.items():
            code, body = _get(f"{url}/state?leader={urllib.parse.quote(str(me['invocation']))}", timeout=3)
            states[name] = body if code == 200 and isinstance(body, dict) else None
        with self.lock:
            self.worker_state = states
            if me["invocation"] != self.invocation:
                if self.invocation:
                    self._release_workers()
                self.invocation, self.formed, self.group, self.missing = me["invocation"], False, {}, {}
                self.killed_at = 0.0
                self.started = time.monotonic()
            if not self.invocation:
                return
            for name, s in states.items():
                if s and s.get("active"):
                    self.seen.setdefault(name, set()).add(str(s["invocation"]))
            if not self.formed and time.monotonic() - self.started > self.form_timeout:
                # A rank that joined and went away during the rendezvous can leave it waiting for good.
                if time.monotonic() - self.killed_at > self.form_timeout:
                    self.killed_at = time.monotonic()
                    self.unit.kill(f"the replica has not formed {self.form_timeout:.0f} s after its leader started")
                return
            if not self.formed:
                if any(s is None for s in states.values()):  # every worker's agent answers before the group is taken
                    return
                if any(s and s.get("attached", self.invocation) != self.invocation for s in states.values()):
                    return  # a worker's rank joined another start of the leader: it resets itself first
                code, _ = _get(self.health_url, timeout=5)
                if code != 200:
                    return
                self.formed = True
                self.group = {n: str(s["invocation"]) for n, s in states.items() if s and s.get("active")}
                log(f"replica formed: leader {self.invocation}, workers {self.group}")
            lost = []
            for name, s in states.items():
                if s is None:  # its agent is silent: a blip, or the node is gone
                    self.missing[name] = self.missing.get(name, 0) + 1
                    if self.missing[name] >= self.grace:
                        lost.append(f"{name} does not answer")
                    continue
                self.missing[name] = 0
                if not s.get("active"):
                    lost.append(f"{name}'s rank is stopped")
                elif s.get("invocation") != self.group.get(name):
                    lost.append(f"{name}'s rank restarted")
            if lost and time.monotonic() - self.killed_at > 10:
                self.killed_at = time.monotonic()
                self.unit.kill("the replica lost a rank (" + "; ".join(lost) + "): its leader restarts and waits "
                               "for every rank to join again")


class Worker:
    def __init__(self, unit: Unit, leader_grace: float, attach_after: float) -> None:
        self.unit = unit
        self.leader_grace = leader_grace
        self.attach_after = attach_after
        self.candidate, self.candidate_since = "", 0.0  # the leader start the polls name, and since when
        self.invocation = ""  # the rank's start being watched
        self.attached = ""  # the leader start that rank joined ("" until one is seen)
        self.leader = ""  # the leader's current start, as its agent's last poll named it ("" while it is stopped)
        self.polled = 0.0  # when the leader's agent last polled (monotonic; 0: never)
        self.killed: set[str] = set()
        self.lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"role": "worker", **self.unit.state(), "attached": self.attached}

    def polled_by_leader(self, leader: str) -> None:
        with self.lock:
            self.leader, self.polled = leader, time.monotonic()

    def kill(self, invocation: str, why: str = "") -> int:
        with self.lock:
            state = self.unit.state()
            if not state["active"] or state["invocation"] != invocation:
                return 409
            if invocation not in self.killed:  # the leader's agent and this one may both ask
                self.killed.add(invocation)
                self.unit.kill(why or f"the leader that rank {invocation} joined is gone: it restarts to join the "
                               "next one")
            return 200

    def poll(self) -> None:
        me = self.unit.state()
        why = ""
        with self.lock:
            now = time.monotonic()
            if me["invocation"] != self.invocation:
                self.invocation, self.attached, self.candidate = me["invocation"], "", ""
            if not self.invocation or not self.polled:
                return
            fresh = now - self.polled <= self.leader_grace
            if fresh and self.leader and not self.attached:
                if self.leader != self.candidate:
                    self.candidate, self.candidate_since = self.leader, now
                elif now - self.candidate_since >= self.attach_after:
                    self.attached = self.leader
                    log(f"rank {self.invocation} joins leader start {self.attached}")
            elif fresh and self.leader and self.leader != self.attached:
                why = (f"the leader start rank {self.invocation} joined ({self.attached}) ended and {self.leader} "
                       "runs: the rank restarts to join it")
            elif not fresh and self.attached:
                why = (f"the leader's agent has not polled for {self.leader_grace:g} s (its node is lost or cut "
                       f"off): rank {self.invocation} restarts to wait for the leader's return")
        if why:
            self.kill(me["invocation"], why)


def serve(role: Leader | Worker, bind: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            leader = urllib.parse.parse_qs(query, keep_blank_values=True).get("leader")
            if path == "/state" and leader is not None and isinstance(role, Worker):
                role.polled_by_leader(leader[0])
            state = role.snapshot()
            if path == "/state":
                self._reply(200, state)
            elif path == "/health" and isinstance(role, Leader):
                self._reply(200 if state["complete"] else 503, state)
            else:
                self._reply(404, {"error": "GET /state or /health"})

        def do_POST(self) -> None:
            if isinstance(role, Worker) and self.path.startswith("/kill?invocation="):
                self._reply(role.kill(self.path.split("=", 1)[1]), {})
            else:
                self._reply(404, {"error": "POST /kill?invocation=ID on a worker"})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((bind, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["leader", "worker"], required=True)
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--unit", default="llmrack-serving.service")
    p.add_argument("--kill", required=True, help="the command that kills the serving container (space-separated)")
    p.add_argument("--health-url", help="leader: the engine's health URL")
    p.add_argument("--worker", action="append", default=[], help="leader: NAME=http://ADDRESS:PORT of a worker's agent")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--grace", type=int, default=3, help="leader: polls a worker's agent may miss before it is lost")
    p.add_argument("--leader-grace", type=float, default=30,
                   help="worker: seconds without a poll from the leader's agent before the rank is reset")
    p.add_argument("--attach-after", type=float, default=5,
                   help="worker: seconds the leader's polls must name one leader start before the rank is taken to "
                   "have joined it (longer than a poll's round trip)")
    p.add_argument("--form-timeout", type=float, default=900,
                   help="leader: seconds a start of the leader may take to form the replica before it is restarted")
    args = p.parse_args(argv)
    unit = Unit(args.unit, args.kill.split())
    role: Leader | Worker
    if args.role == "leader":
        if not args.health_url or not args.worker:
            p.error("--role leader needs --health-url and at least one --worker")
        role = Leader(unit, args.health_url, dict(w.split("=", 1) for w in args.worker), args.grace,
                      args.form_timeout)
    else:
        role = Worker(unit, args.leader_grace, args.attach_after)
    serve(role, args.bind, args.port)
    log(f"replica agent ({args.role}) on {args.bind}:{args.port}")
    while True:
        try:
            role.poll()
        except Exception as exc:  # keep watching: one bad poll must not stop the replica's supervision
            log(f"poll failed: {exc!r}")
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
