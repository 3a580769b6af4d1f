"""Serving evidence, taken from the control machine (where users' requests come from): /ready, the API key
enforced on /v1/models, and one real completion round trip with its latency. Keys never appear in the output."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from llmrack import catalog
from llmrack.contracts.serving_command import READY_PATH, Engine, ServingCommandError, engine_for
from llmrack.errors import LlmrackError
from llmrack.plan import plan
from llmrack.spec import DeploymentSpec
from llmrack.validation import golden
from llmrack.validation.evidence import Item

PROMPT = "The capital of France is"


def _call(client: httpx.Client, method: str, path: str, key: str | None, **kwargs: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    start = time.perf_counter()
    resp = client.request(method, path, headers=headers, **kwargs)
    return {"status": resp.status_code, "seconds": time.perf_counter() - start, "body": resp.text[:2000]}


def ready_path(spec: DeploymentSpec | None, device: str | None = None) -> str:
    """Where the spec's engine on a node serving on `device` (the inventory's serving_device; default: the
    accelerator's own kind) says it is ready (llmrack.contracts.serving_command): /ready, or vLLM's /health."""
    if spec is None:
        return READY_PATH[Engine.llmrack]
    try:
        return READY_PATH[engine_for(spec, plan(spec.plan_request(), catalog.accelerator(spec.accelerator)),
                                     device).engine]
    except (LlmrackError, ServingCommandError):
        return READY_PATH[Engine.llmrack]


def probe(url: str, api_keys: tuple[str, ...], model: str | None, timeout: float = 60.0,
          ready: str = READY_PATH[Engine.llmrack], golden_reference: dict[str, Any] | None = None) -> Item:
    """`golden_reference`: a recorded greedy reference (llmrack.validation.golden) to ask the same prompts of."""
    out: dict[str, Any] = {"url": url, "ready_path": ready}
    key = api_keys[0] if api_keys else None
    try:
        with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client:
            out["ready"] = _call(client, "GET", ready, None)
            out["no_key"] = _call(client, "GET", "/v1/models", None)
            out["wrong_key"] = _call(client, "GET", "/v1/models", "llmrack-validation-not-a-key")
            out["good_key"] = _call(client, "GET", "/v1/models", key)
            if model is None and out["good_key"]["status"] == 200:
                listed = json.loads(out["good_key"]["body"]).get("data") or [{}]
                model = listed[0].get("id")
            comp = _call(client, "POST", "/v1/completions", key,
                         json={"model": model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0})
            if comp["status"] == 200:
                body = json.loads(comp["body"])
                comp["text"] = body["choices"][0].get("text", "")
                comp["completion_tokens"] = (body.get("usage") or {}).get("completion_tokens", 0)
            comp["model"] = model
            out["completion"] = comp
            if golden_reference is not None:
                ref = golden_reference
                try:
                    got = golden.complete(url, str(ref["model"]), ref["prompts"], int(ref["max_tokens"]), key,
                                          timeout)
                    out["golden"] = {"differences": golden.differences(ref, got), "prompts": len(got),
                                     "max_tokens": ref["max_tokens"], "recorded_from": ref.get("recorded_from")}
                except httpx.HTTPError as exc:
                    out["golden"] = {"error": f"{type(exc).__name__}: {exc}"}
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return Item("serving", 0, json.dumps(out))
