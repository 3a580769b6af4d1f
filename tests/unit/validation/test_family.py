"""Every registered accelerator family keeps the contract of llmrack.validation.checks.family: its suite module
runs exactly its checks, node checks once per node and device checks once per device."""

from __future__ import annotations

import ast
from importlib import resources

import pytest

from llmrack.validation import checks
from llmrack.validation.expect import NodeKind


def suite_calls(kind: str) -> dict[str, bool]:
    """check function name -> whether its test takes a `device`, from suite/test_<kind>.py."""
    src = resources.files("llmrack.validation.suite").joinpath(f"test_{kind}.py").read_text()
    out: dict[str, bool] = {}
    for fn in ast.parse(src).body:
        if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_"):
            takes_device = any(a.arg == "device" for a in fn.args.args)
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "checks":
                    out[node.attr] = takes_device
    return out


def test_every_node_kind_has_a_family() -> None:
    assert set(checks.FAMILIES) == set(NodeKind)
    for kind, family in checks.FAMILIES.items():
        assert family.kind is kind and family.runtime_markers


@pytest.mark.parametrize("kind", [k for k, f in checks.FAMILIES.items() if f.node_checks() or f.device_checks()])
def test_suite_module_runs_exactly_the_family_checks(kind: NodeKind) -> None:
    family = checks.of_kind(kind)
    expected = {fn.__name__: False for fn in family.node_checks()}
    expected |= {fn.__name__: True for fn in family.device_checks()}
    assert suite_calls(kind.value) == expected
