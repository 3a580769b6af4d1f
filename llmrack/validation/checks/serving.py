"""Serving checks, from the control machine: /ready, the API key enforced, a real completion and its latency."""

from __future__ import annotations

import json
from typing import Any

from llmrack.contracts.inventory import REPLICA_VAR
from llmrack.validation import fabric, replica
from llmrack.validation.checks.base import Missing, Outcome, failed, judge, passed, skip
from llmrack.validation.evidence import Evidence, Item
from llmrack.validation.expect import Expectations
from llmrack.validation.parsers import ParseError
from llmrack.validation.parsers import ascend as asc
from llmrack.validation.parsers import nvidia as nv

COMPLETION_SECONDS = 30.0  # default bound for one short completion (llmrack_validation_completion_seconds overrides)


def _serving(ev: Evidence, exp: Expectations) -> dict[str, Any]:
    got = ev.get("serving")
    if got is None:
        if exp.replica_rank:
            raise Missing(skip(f"a headless worker (rank {exp.replica_rank} of replica {exp.var(REPLICA_VAR)}): "
                               "its replica serves, and is checked, on its leader"))
        if not exp.serving_url:
            raise Missing(skip("no llmrack_serving_url for this node: nothing serves here"))
        raise Missing(skip("serving is checked from the control machine during a live run, not from a dump"))
    data: dict[str, Any] = json.loads(got.out)
    if data.get("error"):
        raise Missing(failed("unreachable", "answers", None, f"{data.get('url')}: {data['error']}"))
    return data


def serving_ready(ev: Evidence, exp: Expectations) -> Outcome:
    data = _serving(ev, exp)
    status = data["ready"]["status"]
    body = data["ready"]["body"][:200]
    path = data.get("ready_path", "/ready")  # the engine's readiness path: /ready, or vLLM's /health
    return judge(status == 200, status, "== 200", "HTTP status", f"GET {data['url']}{path}: {body}")


def serving_api_key(ev: Evidence, exp: Expectations) -> Outcome:
    data = _serving(ev, exp)
    if not exp.api_keys:
        return skip("no API key to test with (neither the inventory's serving_api_keys nor --api-key-file): "
                    "key enforcement cannot be tested")
    without, wrong, good = data["no_key"]["status"], data["wrong_key"]["status"], data["good_key"]["status"]
    ok = without == 401 and wrong == 401 and good == 200
    return judge(ok, f"no key {without}, wrong key {wrong}, valid key {good}", "401, 401, 200", "HTTP status",
                 "GET /v1/models")


def serving_completion(ev: Evidence, exp: Expectations) -> Outcome:
    data = _serving(ev, exp)
    comp = data["completion"]
    limit = float(exp.var("llmrack_validation_completion_seconds") or COMPLETION_SECONDS)
    if comp["status"] != 200:
        return failed(f"HTTP {comp['status']}", "HTTP 200", None, comp.get("body", "")[:300])
    tokens = comp.get("completion_tokens") or 0
    return judge(tokens > 0 and comp["seconds"] <= limit, round(comp["seconds"], 3), f"<= {limit:g}", "s",
                 f"{tokens} tokens from model {comp.get('model')!r}: {comp.get('text', '')[:80]!r}",
                 completion_tokens=tokens)


def serving_golden(ev: Evidence, exp: Expectations) -> Outcome:
    """Greedy completions equal to the reference recorded from a known-good layout (llmrack.validation.golden):
    a mis-wired replica or a device that corrupts numbers still answers, but with other tokens."""
    data = _serving(ev, exp)
    got = data.get("golden")
    if got is None:
        return skip("no golden reference (inventory llmrack_validation_golden): record one with "
                    "python -m llmrack.validation.golden record URL --model NAME --out FILE")
    if got.get("error"):
        return failed("unreachable", "greedy completions", None, got["error"])
    diffs = got["differences"]
    return judge(not diffs, len(diffs), "== 0", "prompts that differ",
                 "; ".join(diffs) or f"{got['prompts']} prompts x {got['max_tokens']} tokens identical to the "
                 f"reference ({got.get('recorded_from')})")


def serving_allreduce(ev: Evidence, exp: Expectations) -> Outcome:
    """A replica of several nodes: an all-reduce across its nodes (torch.distributed gloo on the data network, in
    the serving image) sums correctly; its bus bandwidth is the figure, judged against
    llmrack_validation_allreduce_gbps where that is set."""
    name = exp.var(REPLICA_VAR)
    if exp.replica_rank:
        return skip(f"rank {exp.replica_rank} of replica {name}: the replica's all-reduce is reported on its leader")
    got = ev.get(replica.ITEM)
    if got is None:
        return skip(f"no all-reduce for replica {name or exp.host}: a one-node replica has no collective across "
                    "nodes; a replica of several runs it in a live run that checks all its nodes (no dumps, no --limit "
                    "that leaves a rank out)")
    if got.rc != 0:
        return failed(f"rc {got.rc}", "all ranks complete", None, got.err[-600:])
    data: dict[str, Any] = json.loads(got.out)
    sizes = ", ".join(f"{r['bytes'] >> 20} MiB {r['busbw_gbps']:.3f} GB/s" for r in data["sizes"])
    detail = f"{data['backend']} across {', '.join(data.get('members', []))} (world {data['world']}): {sizes}"
    if not data["correct"]:
        return failed("wrong sum", "every element = n(n+1)/2", None, detail)
    want = exp.var("llmrack_validation_allreduce_gbps")
    if want is None:
        return passed(data["busbw_gbps"], None, "GB/s", detail)
    return judge(float(data["busbw_gbps"]) >= float(want), data["busbw_gbps"], f">= {want}", "GB/s", detail)


def _nccl_floor(exp: Expectations) -> tuple[float | None, str]:
    """The bus bandwidth floor across nodes and where it came from."""
    want = exp.var(fabric.FLOOR_VAR)
    if want is not None:
        return float(want), f"{fabric.FLOOR_VAR} ({exp.source(fabric.FLOOR_VAR)})"
    acc = exp.accelerator
    figure = acc.internode_allreduce_busbw_gbps if acc is not None else None
    if acc is None or figure is None:
        return None, (f"no floor: the catalog has no figure across nodes for {acc.name if acc else 'this part'}; "
                      f"set {fabric.FLOOR_VAR}")
    fraction = exp.acceptance.allreduce_practical_fraction
    estimate = " (an estimate)" if "internode_allreduce_busbw_gbps" in acc.uncertain else ""
    return figure * fraction, (f"{fraction:.0%} of the catalog's {figure:g} GB/s for {acc.name}{estimate}: "
                               f"{acc.sources.get('internode', '')}")


def _fabric_nccl(got: Item, data: dict[str, Any], exp: Expectations) -> Outcome:
    members = ", ".join(data.get("members", []))
    try:
        report = nv.nccl_tests(data["output"])
    except ParseError:
        report = None
    if report is None or (got.rc != 0 and not report.out_of_bounds):
        tail = (got.err.strip() or data.get("output", "").strip())[-600:]
        return failed(f"rc {got.rc}", "every rank runs", None,
                      f"nccl-tests all_reduce_perf across {members} (world {data.get('world')}) did not complete: "
                      f"{tail}")
    last = report.rows[-1]
    busbw = min(last.busbw_out, last.busbw_in)
    wrong = sum(r.wrong or 0 for r in report.rows) + (report.out_of_bounds or 0)
    hosts = sorted({host for _, host, _ in report.ranks})
    detail = (f"nccl-tests all_reduce_perf across {members} ({len(report.ranks) or data.get('world')} ranks on "
              f"{len(hosts) or '?'} hosts{': ' + ' '.join(hosts) if hosts else ''}): {last.bytes >> 20} MiB busbw "
              f"{busbw:g} GB/s"
              f"{f', average {report.avg_busbw:g}' if report.avg_busbw is not None else ''}")
    if wrong:
        return failed(f"{wrong} wrong elements", "0 wrong", None,
                      f"{detail}; a link or device corrupts data in flight (out-of-bounds values: "
                      f"{report.out_of_bounds})", busbw_gbps=busbw)
    floor, why = _nccl_floor(exp)
    if floor is None:
        return passed(busbw, None, "GB/s", f"{detail}; {why}", busbw_gbps=busbw)
    return judge(busbw >= floor, busbw, f">= {floor:g}", "GB/s busbw",
                 f"{detail}; floor: {why}" + ("" if busbw >= floor else
                                               "; a slow or down link (HCA, cable, switch port) or NCCL not using "
                                               "the RDMA fabric (NCCL_DEBUG=INFO names the transport)"),
                 busbw_gbps=busbw, floor_gbps=floor)


def _fabric_hccn(data: dict[str, Any]) -> Outcome:
    problems: list[str] = []
    owners: dict[str, str] = {}
    pairs = answered = 0
    for name, node in data["nodes"].items():
        ips, links, health = (asc.npu_addresses(node.get("ip", "")), asc.hccn_links(node.get("link", "")),
                              asc.net_health(node.get("net_health", "")))
        if not ips:
            problems.append(f"{name}: hccn_tool answered nothing (rc {node.get('rc')}): "
                            f"{(node.get('stderr') or node.get('ip') or '').strip()[-200:]}")
        for npu in sorted(ips):
            ip = ips[npu]
            if not ip:
                problems.append(f"{name} NPU {npu}: no address (hccn_tool -i {npu} -ip -g)")
            elif ip in owners:
                problems.append(f"{name} NPU {npu} and {owners[ip]} share the address {ip}")
            else:
                owners[ip] = f"{name} NPU {npu}"
            if links.get(npu) != "UP":
                problems.append(f"{name} NPU {npu}: link status {links.get(npu) or 'not reported'}")
            if health.get(npu) != "Success":
                problems.append(f"{name} NPU {npu}: net health status {health.get(npu) or 'not reported'}")
    for name, result in data["pings"].items():
        for peer_npu, body in fabric.sections(result.get("output", "")).items():
            peer, index = peer_npu.rsplit(" ", 1)
            pings = asc.hccn_pings(body)
            pairs += 1
            if pings and pings[0].received == pings[0].transmitted:
                answered += 1
                continue
            got = (f"{pings[0].transmitted} sent, {pings[0].received} received" if pings else
                   f"no answer from hccn_tool: {body.strip()[-120:]}")
            problems.append(f"{name} NPU {index} -> {peer} NPU {index} "
                            f"({pings[0].address if pings else '?'}): {got}")
    detail = (f"hccn_tool across {', '.join(data.get('members', []))}: {answered}/{pairs} cross-node NPU pings "
              "answered, every NPU's link UP and net health Success")
    if problems:
        return failed(f"{len(problems)} problems", "0", None, "; ".join(problems)[:1500], pings=pairs,
                      answered=answered)
    return passed(f"{answered}/{pairs}", "all answered", "pings", detail, pings=pairs, answered=answered)


def serving_fabric(ev: Evidence, exp: Expectations) -> Outcome:
    """A replica of several accelerator nodes: the accelerators' own fabric between its nodes. NVIDIA: nccl-tests'
    all_reduce_perf over all its GPUs (no wrong element; bus bandwidth >= the floor). Ascend: every NPU's link UP
    and net health Success, and every NPU answers its peers' pings (llmrack.validation.fabric)."""
    name = exp.var(REPLICA_VAR)
    if exp.replica_rank:
        return skip(f"rank {exp.replica_rank} of replica {name}: the replica's fabric is reported on its leader")
    got = ev.get(fabric.ITEM)
    if got is None:
        if exp.kind.value == "cpu":
            return skip("CPU node: no accelerator fabric (serving.allreduce measures the replica's TCP path)")
        return skip(f"no fabric check for replica {name or exp.host}: a one-node replica has no link across nodes; "
                    "a replica of several runs it in a live run that checks all its nodes")
    if got.rc != 0 and not got.out:
        return failed(f"rc {got.rc}", "the check runs", None, got.err[-600:])
    data: dict[str, Any] = json.loads(got.out)
    return _fabric_nccl(got, data, exp) if data["tool"] == "nccl-tests" else _fabric_hccn(data)
