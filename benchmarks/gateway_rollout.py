"""Rolling release under load, outside the lab: HAProxy with the gateway role's own config in front of two real
`python -m serving` processes; each node in turn is drained with the role's drain.yml, restarted (SIGTERM, then a
new process) and returned with enable.yml, while the lab test's load (tests/lab/test_gateway.py: two streaming and
two non-streaming clients back to back) goes through HAProxy. Prints requests, failures, and HAProxy's retry and
redispatch counters (0 and 0: the drain alone kept every request whole).

    python benchmarks/gateway_rollout.py [--haproxy /usr/sbin/haproxy] [--workdir DIR]

Needs Debian's `haproxy` (2.6) and this checkout's venv (ansible, torch). Uses 127.0.0.1 ports 18480/18404 (gateway,
metrics) and 18481/18482 (the two nodes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import jinja2
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.model.tiny import make_tiny  # noqa: E402
from serving.readiness import wait_ready  # noqa: E402
from tests.lab.test_gateway import Load  # noqa: E402

ROLE = ROOT / "ansible" / "roles" / "gateway"
PORTS = {"node1": 18481, "node2": 18482}
GATEWAY, METRICS = 18480, 18404
KEY = "rollout-benchmark-key"


def render(work: Path) -> Path:
    """The role's haproxy.cfg.j2 with its defaults; only addresses, ports and paths are local."""
    ctx = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    for f in ("vars/Debian.yml", "vars/main.yml"):
        ctx.update(yaml.safe_load((ROLE / f).read_text()))
    ctx.update(ansible_managed="benchmarks/gateway_rollout.py", gateway_health_path="/ready",
               gateway_bind_address="127.0.0.1", gateway_port=GATEWAY, gateway_metrics_port=METRICS,
               gateway_backend_port="PORT", gateway_admin_socket=str(work / "admin.sock"), __gateway_chroot=str(work),
               __gateway_user=os.environ.get("USER", "root"), groups={"serving_nodes": list(PORTS)},
               hostvars={n: {"gateway_backend_address": "127.0.0.1"} for n in PORTS})
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    text = env.from_string((ROLE / "templates/haproxy.cfg.j2").read_text()).render(**ctx)
    for node, port in PORTS.items():  # one host here, so one port per node (a rack uses serving.port on each)
        text = text.replace(f"server {node} 127.0.0.1:PORT", f"server {node} 127.0.0.1:{port}")
    text = text.replace("    log /dev/log local0\n", "")
    text = text.replace("    daemon\n", f"    daemon\n    pidfile {work}/hp.pid\n")
    cfg = work / "haproxy.cfg"
    cfg.write_text(text)
    (work / "inventory.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "gateway_admin_socket": str(work / "admin.sock"), "gateway_metrics_port": METRICS},
        "children": {"serving_nodes": {"hosts": {node: {} for node in PORTS}}, "gateway": {"hosts": {"gw": {}}}}}}))
    (work / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "{{ target }}", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "gateway", "tasks_from": "{{ which }}.yml"}}]}]))
    return cfg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gateway-rollout-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = render(work)
    model = make_tiny("qwen2", work / "tiny", seed=0)
    keys = work / "keys"
    keys.write_text(KEY + "\n")
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "ANSIBLE_ROLES_PATH": str(ROOT / "ansible" / "roles"), "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"}

    def start(node: str) -> subprocess.Popen[bytes]:
        log = (work / f"{node}.log").open("a")
        return subprocess.Popen(
            [sys.executable, "-m", "serving", "--model", str(model), "--served-model-name", "tiny", "--host",
             "127.0.0.1", "--port", str(PORTS[node]), "--max-num-seqs", "8", "--max-model-len", "256",
             "--api-key-file", str(keys), "--threads", "1"], stdout=log, stderr=subprocess.STDOUT, env=env)

    def ready(node: str, timeout: float = 300) -> None:
        try:
            wait_ready(f"http://127.0.0.1:{PORTS[node]}", timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{node}: {exc} (see {work}/{node}.log)") from None

    def role(node: str, tasks: str) -> float:
        t = time.monotonic()
        proc = subprocess.run([f"{bindir}/ansible-playbook", "-i", str(work / "inventory.yml"), str(work / "play.yml"),
                               "-e", f"target={node}", "-e", f"which={tasks}"], env=env, capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout[-3000:])
        return time.monotonic() - t

    procs = {n: start(n) for n in PORTS}
    try:
        for n in PORTS:
            ready(n)
        subprocess.run([args.haproxy, "-f", str(cfg)], check=True)
        time.sleep(5)  # two passed health checks per node
        with Load(f"http://127.0.0.1:{GATEWAY}", KEY, clients=4) as load:
            time.sleep(3)
            for node in PORTS:
                drained = role(node, "drain")
                procs[node].send_signal(signal.SIGTERM)
                procs[node].wait(60)
                t = time.monotonic()
                procs[node] = start(node)
                ready(node)
                restarted = time.monotonic() - t
                print(f"{node}: drain {drained:.1f} s, restart to /ready {restarted:.1f} s, "
                      f"back in service {role(node, 'enable'):.1f} s", flush=True)
            time.sleep(3)
        kinds = Counter(kind for kind, _ in load.results)
        rows = [line.split(",") for line in httpx.get(f"http://127.0.0.1:{METRICS}/stats;csv").text.splitlines()]
        header = rows[0]
        backend = next(r for r in rows if r[:2] == ["llmrack_serving", "BACKEND"])
        counters = {k: backend[header.index(k)] for k in ("stot", "wretr", "wredis")}
        print(f"requests {len(load.results)} ({dict(kinds)}), failed or truncated {len(load.failures())}; "
              f"HAProxy: {counters['stot']} sessions, {counters['wretr']} retries, {counters['wredis']} redispatches")
        for failure, count in Counter(load.failures()).most_common(5):
            print(f"  {count} x {failure}")
        return 0 if not load.failures() else 1
    finally:
        for p in procs.values():
            p.terminate()
        pid = work / "hp.pid"
        if pid.exists():
            os.kill(int(pid.read_text().split()[0]), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
