"""`llmrack spec check` and the server agree on every bound of the spec's serving limits: each value at a bound
passes both, each value one past it fails both (llmrack.contracts.serving_defaults owns the bounds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from llmrack.cli.main import app
from llmrack.contracts.serving_defaults import LIMITS, Limit
from llmrack.errors import LlmrackError
from llmrack.spec import ServingSpec
from serving.settings import ServingSettings

# Spec serving fields that size the plan or pick the engine; the server has no such setting.
PLAN_ONLY = {"replicas", "tensor_parallel", "pipeline_parallel", "expert_parallel", "executor", "memory_utilization",
             "engine",
             # no limit: the rendered command's --ssl-certfile/--ssl-keyfile (tests/unit/test_serving_command.py)
             "tls"}
BASE = {"max_model_len": 1024, "max_num_seqs": 4, "max_queue": 16, "port": 8000}


def _cases() -> list[tuple[str, int, bool]]:
    out = []
    for limit in LIMITS.values():
        out += [(limit.name, limit.ge, True), (limit.name, limit.ge - 1, False)]
        if limit.le is not None:
            out += [(limit.name, limit.le, True), (limit.name, limit.le + 1, False)]
    return out


def _spec_check(tmp_path: Path, serving: dict[str, Any]) -> tuple[int, str]:
    spec = {"name": "bounds", "environment": "dev", "accelerator": "a100-80g", "nodes": 1,
            "model": {"name": "deepseek-r1-distill-qwen-1.5b", "source": "/models"}, "serving": serving}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["spec", "check", str(path)])
    # The console script turns a library error into its message and exit code (llmrack.cli.main.run).
    if isinstance(result.exception, LlmrackError):
        return result.exception.exit_code, str(result.exception)
    return result.exit_code, result.output


def _server_accepts(field: str, value: int) -> bool:
    try:
        ServingSettings(model=Path("/models/m"), **{field: value})
    except ValidationError:
        return False
    return True


def test_every_serving_field_is_a_shared_limit_or_plan_only() -> None:
    fields = set(ServingSpec.model_fields)
    assert fields - set(LIMITS) <= PLAN_ONLY, f"classify {sorted(fields - set(LIMITS) - PLAN_ONLY)}"
    assert set(LIMITS) <= fields
    assert set(LIMITS) <= set(ServingSettings.model_fields)


@pytest.mark.parametrize(("field", "value", "valid"), _cases(), ids=str)
def test_spec_check_and_the_server_agree(tmp_path: Path, field: str, value: int, valid: bool) -> None:
    code, output = _spec_check(tmp_path, {**BASE, field: value})
    if valid:
        assert code in (0, 1), output  # valid spec: 0 fits, 1 does not fit
    else:
        assert code == 2 and f"serving.{field}" in output, output
    assert _server_accepts(field, value) is valid


@pytest.mark.parametrize("limit", LIMITS.values(), ids=lambda lim: lim.name)
def test_defaults_agree(limit: Limit) -> None:
    spec_field = ServingSpec.model_fields[limit.name]
    server_field = ServingSettings.model_fields[limit.name]
    if not spec_field.is_required():
        assert spec_field.default == limit.default
    if limit.default is not None:
        assert server_field.default == limit.default


def test_spec_check_refuses_max_queue_zero_as_the_server_does(tmp_path: Path) -> None:
    code, output = _spec_check(tmp_path, {**BASE, "max_queue": 0})
    assert code == 2 and "serving.max_queue" in output and "greater than or equal to 1" in output
    assert not _server_accepts("max_queue", 0)
