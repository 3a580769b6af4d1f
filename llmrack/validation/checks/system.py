"""OS and runtime checks, the same on every node kind: what the common, containerd and nccl_tuning roles set up.
Where the answer depends on the kind of node (the container runtime, NCCL) they ask the node's family."""

from __future__ import annotations

from typing import Any

from llmrack.validation.checks.base import Outcome, failed, item, judge, skip
from llmrack.validation.checks.families import of_kind
from llmrack.validation.evidence import Evidence, Item
from llmrack.validation.expect import Expectations
from llmrack.validation.parsers import system as sysp


def container(ev: Evidence) -> str | None:
    """The container manager when the node is a container (the lab's nodes), else None."""
    got = ev.get("virt")
    name = got.out.strip() if got is not None and got.rc == 0 else ""
    return name if name and name != "none" else None


def os_sysctl(ev: Evidence, exp: Expectations) -> Outcome:
    expected: dict[str, Any] = exp.var("common_sysctl") or {}
    if not expected:
        return skip(f"{exp.unset('common_sysctl')}: nothing to compare")
    where = container(ev)
    if where:
        # Kernel-wide parameters of a container are its host's: judge what the node persists instead.
        actual = sysp.sysctl(item(ev, "sysctl-files", "cat /etc/sysctl.d").out)
    else:
        actual = sysp.sysctl(item(ev, "sysctl", "sysctl").out)
    wrong = {k: actual.get(k, "<absent>") for k, v in expected.items() if actual.get(k) != " ".join(str(v).split())}
    detail = "; ".join(f"{k} = {v} (want {expected[k]})" for k, v in wrong.items())
    n = len(expected)
    if where:
        detail = f"{where} container: checked the persisted /etc/sysctl.d values (the kernel is the host's). {detail}"
    return judge(not wrong, f"{n - len(wrong)}/{n} as set", f"== {n}/{n}",
                 None, detail.strip(), mismatches=wrong)


def os_kernel_cmdline(ev: Evidence, exp: Expectations) -> Outcome:
    expected = [str(p) for p in exp.var("common_kernel_cmdline") or []]
    if not expected:
        return skip(exp.unset("common_kernel_cmdline"))
    if container(ev):
        return skip(f"{container(ev)} container: it boots no kernel of its own, so it has no command line to check")
    actual = sysp.cmdline(item(ev, "cmdline", "/proc/cmdline").out)
    missing = []
    for param in expected:
        key, _, value = param.partition("=")
        if key not in actual or (_ and actual[key] != value):
            missing.append(param)
    n = len(expected)
    return judge(not missing, f"{n - len(missing)}/{n} present", f"== {n}/{n}",
                 None, ("missing: " + " ".join(missing)) if missing else "")


def os_nouveau_absent(ev: Evidence, exp: Expectations) -> Outcome:
    loaded = "nouveau" in sysp.modules(item(ev, "modules", "/proc/modules").out)
    return judge(not loaded, "loaded" if loaded else "not loaded", "== not loaded", None,
                 "nouveau holds the GPUs; the NVIDIA driver cannot bind them" if loaded else "")


def os_services(ev: Evidence, exp: Expectations) -> Outcome:
    units = exp.services()
    states = sysp.unit_states(item(ev, "systemctl", "systemctl").out)
    bad = [f"{u} ({states[u].enabled}/{states[u].active})" if u in states else f"{u} (not reported)"
           for u in units if u not in states or states[u].enabled != "enabled" or states[u].active != "active"]
    return judge(not bad, f"{len(units) - len(bad)}/{len(units)} enabled+active", f"== {len(units)}/{len(units)}", None,
                 ("not enabled and active: " + ", ".join(bad)) if bad else "units: " + ", ".join(units))


def os_containerd_runtime(ev: Evidence, exp: Expectations) -> Outcome:
    config = item(ev, "containerd-config", "containerd").out
    markers = of_kind(exp.kind).runtime_markers
    found = [m for m in markers if m in config]
    return judge(len(found) == len(markers), ", ".join(found) or "none", "all of " + ", ".join(markers), None,
                 f"`containerd config dump` (drop-ins merged) must configure the {exp.kind} runtime")


def os_nccl_env(ev: Evidence, exp: Expectations) -> Outcome:
    got = ev.get("nccl-env")
    if got is None:
        return skip("the evidence has no 'nccl-env'")
    if got.rc != 0:
        if of_kind(exp.kind).needs_nccl_env:
            return failed("absent", "present", None, "/etc/llmrack/nccl.env is missing")
        return skip(f"{exp.kind} node without /etc/llmrack/nccl.env: only NCCL users need it")
    env = sysp.env_file(got.out)
    problems = []
    if "NCCL_SOCKET_IFNAME" in env:
        known = sysp.interfaces(item(ev, "ip-link", "ip").out)
        for name in env["NCCL_SOCKET_IFNAME"].lstrip("^=").split(","):
            # NCCL matches a prefix unless the list starts with "=".
            if name and not any(i == name or i.startswith(name) for i in known):
                problems.append(f"NCCL_SOCKET_IFNAME names {name!r}, no such interface")
    if env.get("NCCL_IB_HCA"):
        hcas = set((ev.get("infiniband") or Item("infiniband", 1, "")).out.split())
        for name in env["NCCL_IB_HCA"].lstrip("^=").split(","):
            dev = name.split(":")[0]
            if dev and not any(h.startswith(dev) for h in hcas):
                problems.append(f"NCCL_IB_HCA names {dev!r}, not in /sys/class/infiniband")
    if exp.accelerator is not None and exp.accelerator.nvlink_links and env.get("NCCL_P2P_DISABLE") == "1":
        problems.append("NCCL_P2P_DISABLE=1 on an NVLink system turns NVLink peer-to-peer off")
    return judge(not problems, f"{len(env)} variables, {len(problems)} inconsistent", "== 0 inconsistent", None,
                 "; ".join(problems), env=env)
