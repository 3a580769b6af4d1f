"""Golden output: greedy completions of a fixed prompt set, recorded when a release is made, compared after.

A replica that is wired wrongly (a pipeline stage on the wrong node, ranks in the wrong order, an
expert-parallel path that computes something else) or a device that silently corrupts numbers still answers
/health and still returns tokens; only its tokens differ. So the reference is recorded from a layout known to be
right (one device, or the release's own first good run) and every validation run asks the same prompts with
greedy decoding (temperature 0) and compares the text exactly.

Reference file (JSON; the inventory's llmrack_validation_golden names it on the control machine)::

    {"model": "tiny", "max_tokens": 24, "prompts": ["...", ...], "completions": ["...", ...],
     "recorded_from": "http://.../v1/completions (llmrack engine, one device)"}

    python -m llmrack.validation.golden record URL --model NAME [--api-key-file F] --out golden.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from llmrack.errors import UsageError

PROMPTS = ("The rack", "Deploy the model and", "Why is the queue")
MAX_TOKENS = 24
GOLDEN_VAR = "llmrack_validation_golden"


def complete(url: str, model: str, prompts: list[str] | tuple[str, ...], max_tokens: int, api_key: str | None,
             timeout: float = 120.0) -> list[str]:
    """Greedy completions of `prompts` (one request each: batching must not change greedy output)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    out = []
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers) as client:
        for prompt in prompts:
            resp = client.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                                         "temperature": 0, "ignore_eos": True})
            resp.raise_for_status()
            out.append(str(resp.json()["choices"][0]["text"]))
    return out


def record(url: str, model: str, api_key: str | None, prompts: tuple[str, ...] = PROMPTS,
           max_tokens: int = MAX_TOKENS, source: str = "") -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "prompts": list(prompts),
            "completions": complete(url, model, prompts, max_tokens, api_key),
            "recorded_from": source or f"{url}/v1/completions"}


def load(path: str | Path) -> dict[str, Any]:
    """A reference file; UsageError naming the variable and the fix when it is missing or malformed."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"{GOLDEN_VAR}: cannot read {path}: {exc.strerror}; record one with "
                         "python -m llmrack.validation.golden record") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{GOLDEN_VAR}: {path} is not JSON ({exc.msg}); record it again") from None
    if not isinstance(data, dict) or not {"model", "max_tokens", "prompts", "completions"} <= set(data) or \
            len(data["prompts"]) != len(data["completions"]):
        raise UsageError(f"{GOLDEN_VAR}: {path} needs model, max_tokens, and as many prompts as completions")
    return data


def differences(reference: dict[str, Any], got: list[str]) -> list[str]:
    """One line per prompt whose completion differs, with where it starts to differ."""
    out = []
    for prompt, want, have in zip(reference["prompts"], reference["completions"], got, strict=True):
        if want == have:
            continue
        at = next((i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b), min(len(want), len(have)))
        out.append(f"{prompt!r}: differs from character {at}: expected {want[at:at + 24]!r}, got {have[at:at + 24]!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmrack.validation.golden",
                                     description="record a golden-output reference from a known-good server")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("url")
    rec.add_argument("--model", required=True)
    rec.add_argument("--api-key-file", type=Path)
    rec.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    rec.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    key = args.api_key_file.read_text().strip() if args.api_key_file else None
    try:
        data = record(args.url, args.model, key, max_tokens=args.max_tokens)
    except httpx.HTTPError as exc:
        print(f"error: {args.url}: {exc}", file=sys.stderr)
        return 1
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
