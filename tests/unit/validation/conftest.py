from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmrack.validation import checks, expect
from llmrack.validation.evidence import Evidence

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "validation"
GROUP = {"nvidia": "nvidia_nodes", "ascend": "ascend_nodes", "cpu": "cpu_nodes"}


def expectations(kind: str, accelerator: str | None = None, **hostvars: Any) -> expect.Expectations:
    hv: dict[str, Any] = {"group_names": [GROUP[kind], "serving_nodes"], **hostvars}
    if accelerator:
        hv["llmrack_accelerator"] = accelerator
    return expect.build("node", hv)


def evidence(name: str) -> Evidence:
    return Evidence.load(FIXTURES / name)


def outcome(fn: checks.CheckFn, fixture: str, exp: expect.Expectations, *args: Any) -> checks.Outcome:
    return checks.run(fn, evidence(fixture), exp, *args)


@pytest.fixture
def a100() -> expect.Expectations:
    return expectations("nvidia", "a100-80g", nvidia_driver_version="535.129.03")
