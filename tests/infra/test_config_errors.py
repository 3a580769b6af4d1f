"""Bad stack config fails before any resource is registered, with a message naming the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import record
from tests.infra.harness import SECRETS, run_stack, stack_config


def _deployment(stack: str, **changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(stack_config(stack)["llmrack:deployment"])
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = spec
        for key in parents:
            node = node[key]
        node[last] = value
    return spec


CASES = [
    ("unknown accelerator", "dev", {"llmrack:deployment": _deployment("dev", accelerator="a100-99g")}, {},
     ["llmrack:deployment", "accelerator", "a100-99g", "a100-80g"]),
    ("TP does not divide the heads", "dev", {"llmrack:deployment": _deployment("dev", serving__tensor_parallel=5)}, {},
     ["serving.tensor_parallel", "does not divide"]),
    ("canary share above 99", "staging",
     {"llmrack:canary": {**stack_config("staging")["llmrack:canary"], "weight": 150}}, {},
     ["llmrack:canary.weight", "150"]),
    ("canary share no replica can carry", "staging",
     {"llmrack:canary": {**stack_config("staging")["llmrack:canary"], "weight": 10}}, {},
     ["llmrack:canary.weight", "shares possible are [50]%"]),
    ("image by tag", "dev", {"llmrack:image": "registry.internal.example/llmrack/serving-cuda:latest"}, {},
     ["llmrack:image", "pinned by digest"]),
    ("open LoadBalancer", "prod", {"llmrack:serving": {"service": {"type": "LoadBalancer"}}}, {},
     ["llmrack:serving.service", "allowlist"]),
    ("unknown fleet kind", "dev", {"llmrack:fleet": {"kind": "gcp"}}, {}, ["llmrack:fleet.kind", "aws, huaweicloud"]),
    ("AWS fleet for an Ascend part", "staging",
     {"llmrack:fleet": {**stack_config("prod")["llmrack:fleet"], "instanceType": None}}, {},
     ["llmrack:fleet.kind", "ascend-910b"]),
    ("instance type of another part", "prod",
     {"llmrack:fleet": {**stack_config("prod")["llmrack:fleet"], "instanceType": "p4d.24xlarge"}}, {},
     ["llmrack:fleet.instanceType", "a100-40g"]),
    ("autoscaler beyond the nodes", "prod",
     {"llmrack:serving": {**stack_config("prod")["llmrack:serving"],
                          "autoscaling": {"enabled": True, "maxReplicas": 9}}}, {},
     ["llmrack:serving.autoscaling.maxReplicas", "9"]),
    ("Ascend without device plugin image", "staging", {"llmrack:acceleratorStack": {}}, {},
     ["llmrack:acceleratorStack.ascendDevicePluginImage"]),
    ("missing API keys secret", "dev", {}, {"secrets": {}}, ["llmrack:apiKeys", "pulumi config set --secret"]),
    ("API keys in plain text", "dev", {}, {"secrets": {}, "plain": {"llmrack:apiKeys": ["k"]}},
     ["llmrack:apiKeys", "must be a Pulumi secret"]),
    ("missing kubeconfig secret", "prod", {}, {"secrets": {"llmrack:apiKeys": ["k"]}}, ["llmrack:kubeconfig"]),
    ("unknown key", "dev", {"llmrack:serving": {"namespce": "x"}}, {},
     ["llmrack:serving.namespce", "unknown key; did you mean 'namespace'?"]),
    # Stack keys are camelCase: the suggestion and the allowed keys are spelled as the stack file spells them.
    ("unknown nested key", "dev", {"llmrack:serving": {"modelVolume": {"kind": "pvc", "sizeGb": 10}}}, {},
     ["llmrack:serving.modelVolume.sizeGb", "did you mean 'sizeGib'?", "claimName"]),
]


@pytest.mark.parametrize(("stack", "overrides", "extra", "expected"),
                         [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_config_fails_before_any_resource(
    stack: str, overrides: dict[str, Any], extra: dict[str, Any], expected: list[str], scan_results: Path
) -> None:
    plain = {"llmrack:scanResultsDir": str(scan_results), **extra.get("plain", {})}
    secrets = extra.get("secrets", SECRETS)
    run, error, monitor = run_stack(stack, overrides=overrides, secrets=secrets, plain=plain)
    assert run is None and error is not None
    message = str(error)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert monitor.get_registered_resources() == {}


def test_image_that_failed_the_scan_gate_is_refused(tmp_path: Path) -> None:
    image = stack_config("prod")["llmrack:image"]
    record(tmp_path, image, "failed")
    run, error, monitor = run_stack("prod", plain={"llmrack:scanResultsDir": str(tmp_path)})
    assert run is None
    assert "llmrack:image" in str(error) and "CVE-2024-0001" in str(error)
    assert monitor.get_registered_resources() == {}


def test_unscanned_image_refused_in_prod_but_allowed_in_dev(tmp_path: Path) -> None:
    _, error, _ = run_stack("prod", plain={"llmrack:scanResultsDir": str(tmp_path)})
    assert error is not None and "has not been scanned" in str(error)
    run, error, _ = run_stack("dev", plain={"llmrack:scanResultsDir": str(tmp_path)})
    assert error is None and run is not None
