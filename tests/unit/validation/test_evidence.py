"""A damaged dump is a usage error naming the file, never a traceback in `llmrack validate analyze`."""

from __future__ import annotations

import json

import pytest

from llmrack.errors import UsageError
from llmrack.validation.evidence import SCHEMA, Evidence

MANIFEST = json.dumps({"schema": SCHEMA, "host": "node1", "level": "quick"}).encode()


def test_dump_round_trips_through_files() -> None:
    ev = Evidence.from_files({"manifest.json": MANIFEST, "uname.out": b"Linux\n", "uname.rc": b"0\n"}, "dump")
    uname = ev.get("uname")
    assert ev.host == "node1" and uname is not None and (uname.rc, uname.out) == (0, "Linux\n")
    assert Evidence.from_files(ev.to_files(), "again").items == ev.items


@pytest.mark.parametrize(("files", "message"), [
    ({}, "no manifest.json"),
    ({"manifest.json": b"{bad"}, "manifest.json is not valid JSON"),
    ({"manifest.json": b"[1]"}, "manifest.json is not a JSON object"),
    ({"manifest.json": json.dumps({"schema": "other/9"}).encode()}, "unknown dump schema"),
    ({"manifest.json": MANIFEST, "uname.rc": b"zz\n"}, "uname.rc holds 'zz', not an exit status"),
], ids=["no-manifest", "manifest-not-json", "manifest-not-object", "other-schema", "rc-not-a-number"])
def test_damaged_dump_is_a_usage_error(files: dict[str, bytes], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Evidence.from_files(files, "dump")
