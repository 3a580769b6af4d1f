"""vLLM is rendered with priority scheduling, so the `priority` the batch service sends orders its queue (vLLM
refuses a non-zero priority under its default first-come-first-served policy)."""

from __future__ import annotations

from llmrack.batch.protocol import BATCH_PRIORITY
from llmrack.contracts.serving_command import render
from tests.unit.test_serving_command import _flags, _inputs


def test_vllm_schedules_by_priority_and_batch_requests_come_last() -> None:
    cmd = render(_inputs())
    assert cmd.program == ("vllm", "serve")
    assert _flags(cmd.args)["--scheduling-policy"] == "priority"
    assert BATCH_PRIORITY > 0  # vLLM's convention: lower is sooner, online requests carry 0
