"""Model check: the node serves the model version the spec names (model.version) and its files verify."""

from __future__ import annotations

import json

from llmrack.validation.checks.base import Missing, Outcome, failed, item, judge, skip
from llmrack.validation.evidence import Evidence
from llmrack.validation.expect import Expectations
from llmrack.validation.model_evidence import ITEM


def model_version(ev: Evidence, exp: Expectations) -> Outcome:
    want = exp.spec.model.version if exp.spec is not None else None
    if not want:
        return skip("the spec names no model.version: the node serves serving_model_dir as it is")
    if not exp.serving_url:
        return skip("no llmrack_serving_url for this node: nothing serves here")
    try:
        got = item(ev, ITEM, "the serving role's release history")
    except Missing as missing:
        if missing.outcome.status == "fail":
            return failed("no release history", want, None, "the serving role has not rolled a model version out here")
        raise
    data = json.loads(got.out)
    running = data.get("model", "")
    if running != want:
        return failed(running or "none", want, None, f"the node's release history: {data.get('releases')}")
    if not data.get("unit_mounts_it"):
        return failed(running, want, None, "the serving unit does not mount this version's directory")
    verify = data.get("verify", {})
    level = ev.manifest.get("level", "quick")
    if verify.get("rc") != 0:
        return failed(running, want, None, f"its files do not verify ({level}): {verify.get('err', '')[:600]}")
    summary = json.loads(verify.get("out") or "{}")
    return judge(True, running, want, None,
                 f"{summary.get('files')} files, {summary.get('bytes')} bytes verified ({summary.get('level')})")
