"""Serving checks, from the control machine: /ready, the API key enforced, a real completion and its latency."""

from __future__ import annotations

import json
from typing import Any

from llmrack.contracts.inventory import REPLICA_VAR
from llmrack.validation import replica
from llmrack.validation.checks.base import Missing, Outcome, failed, judge, passed, skip
from llmrack.validation.evidence import Evidence
from llmrack.validation.expect import Expectations

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
