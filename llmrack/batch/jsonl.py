"""Checks an input file (OpenAI's batch JSONL) and names the first line that is wrong.

A line is `{"custom_id": str, "method": "POST", "url": one of ENDPOINTS, "body": {"model": str, ...}}`.
Line numbers are 1-based, as an editor shows them.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from llmrack.batch.protocol import ENDPOINTS, BatchAPIError


@dataclass(frozen=True)
class Line:
    number: int
    custom_id: str
    url: str
    body: dict[str, Any]


def _refuse(number: int, code: str, message: str, fix: str) -> BatchAPIError:
    return BatchAPIError(400, f"line {number}: {message}; {fix}", code=code, param="file", line=number)


def parse(data: bytes, max_bytes: int) -> list[Line]:
    """Every request line of a batch input file; raises BatchAPIError naming the first wrong line."""
    if len(data) > max_bytes:
        raise BatchAPIError(413, f"the file is {len(data)} bytes; this service accepts at most {max_bytes} bytes "
                                 "per file: split it into several batches", code="file_too_large", param="file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        number = data[: exc.start].count(b"\n") + 1
        raise _refuse(number, "invalid_encoding", "is not UTF-8", "save the file as UTF-8 JSONL") from None
    lines: list[Line] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        line = _parse_line(number, raw)
        first = seen.setdefault(line.custom_id, number)
        if first != number:
            raise _refuse(number, "duplicate_custom_id", f"custom_id {line.custom_id!r} is also on line {first}",
                          "give every request its own custom_id")
        lines.append(line)
    if not lines:
        raise BatchAPIError(400, "the file holds no request line; each line is one JSON request object",
                            code="empty_file", param="file")
    return lines


def _parse_line(number: int, raw: str) -> Line:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _refuse(number, "invalid_json_line", f"is not JSON ({exc.msg} at column {exc.colno})",
                      "each line must be one JSON object (JSONL)") from None
    if not isinstance(obj, dict):
        raise _refuse(number, "invalid_json_line", "is not a JSON object", "each line must be one JSON object")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _refuse(number, "missing_custom_id", "has no custom_id (a non-empty string)",
                      "add a unique \"custom_id\" to every line")
    method = obj.get("method", "POST")
    if method != "POST":
        raise _refuse(number, "invalid_method", f"method {method!r} is not supported", "use \"method\": \"POST\"")
    url = obj.get("url")
    if url not in ENDPOINTS:
        raise _refuse(number, "invalid_url", f"url {url!r} is not a batch endpoint",
                      f"use one of {', '.join(ENDPOINTS)}")
    body = obj.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise _refuse(number, "missing_model", "has no body with a \"model\" string",
                      "put the request, with its model, under \"body\"")
    if body.get("stream"):
        raise _refuse(number, "invalid_body", "asks for a stream", "drop \"stream\": batch answers are whole")
    return Line(number=number, custom_id=custom_id, url=str(url), body=body)


def check_models(lines: list[Line], served: Collection[str]) -> None:
    """Refuse the first line whose model the upstream does not serve."""
    for line in lines:
        model = line.body["model"]
        if model not in served:
            raise _refuse(line.number, "model_not_found", f"model {model!r} is not served on this rack",
                          f"use one of: {', '.join(sorted(served)) or '(none: the upstream lists no model)'}")


def check_endpoint(lines: list[Line], endpoint: str) -> None:
    """Refuse the first line whose url is not the batch's endpoint."""
    for line in lines:
        if line.url != endpoint:
            raise _refuse(line.number, "mismatched_endpoint", f"url {line.url!r} differs from the batch's endpoint "
                          f"{endpoint!r}", "send one endpoint per batch")
