"""The policy pack as the Pulumi engine runs it: its own process, spoken to over the analyzer gRPC protocol.

This is what `pulumi preview --policy-pack infra/policy` does; it proves the pack loads, registers every
policy, and that the validators see the engine's property proxies (not dicts) correctly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from tests.infra.harness import ROOT, run_stack
from tests.infra.test_policy import deployment


@pytest.fixture(scope="module")
def analyzer() -> Iterator[Any]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "infra" / "policy" / "__main__.py")],
                            stdout=subprocess.PIPE, cwd=ROOT / "infra" / "policy")
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())  # the pack prints the port it serves on, as the engine expects
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        proc.kill()
        proc.wait()


def _resource(rtype: str, name: str, props: dict[str, Any]) -> dict[str, Any]:
    struct = struct_pb2.Struct()
    struct.update(json.loads(json.dumps(props)))
    return {"type": rtype, "properties": struct, "urn": f"urn:pulumi:prod::llmrack::{rtype}::{name}", "name": name}


def _violations(response: Any) -> set[str]:
    return {d.policyName for d in response.diagnostics}


def test_pack_registers_every_policy_as_mandatory(analyzer: Any) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert {p.name for p in info.policies} == {
        "llmrack-accelerator-limits", "llmrack-shm-for-tensor-parallel", "llmrack-images-pinned-by-digest",
        "llmrack-no-open-load-balancer", "llmrack-pdb-in-prod",
    }
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}


def test_failing_resources_are_reported(analyzer: Any) -> None:
    bad = deployment(gpus=4, shm=False, image="registry.example/llmrack/serving:latest")
    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**_resource("kubernetes:apps/v1:Deployment", "bad", bad)))
    assert _violations(response) == {"llmrack-shm-for-tensor-parallel", "llmrack-images-pinned-by-digest"}
    no_gpu = deployment(gpus=0, shm=False)
    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**_resource("kubernetes:apps/v1:Deployment", "g", no_gpu)))
    assert _violations(response) == {"llmrack-accelerator-limits"}
    lb = {"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}}
    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**_resource("kubernetes:core/v1:Service", "s", lb)))
    assert _violations(response) == {"llmrack-no-open-load-balancer"}
    stack = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[
        analyzer_pb2.AnalyzerResource(**_resource("kubernetes:apps/v1:Deployment", "d", deployment()))]))
    assert _violations(stack) == {"llmrack-pdb-in-prod"}


def test_every_resource_of_the_prod_stack_passes(analyzer: Any, scan_results: Path) -> None:
    run, error, _ = run_stack("prod", plain={"llmrack:scanResultsDir": str(scan_results)})
    assert error is None and run is not None
    resources = [_resource(r.type, r.name, r.state) for r in run.resources]
    for res in resources:
        response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**res))
        assert _violations(response) == set(), res["name"]
    stack = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(
        resources=[analyzer_pb2.AnalyzerResource(**r) for r in resources]))
    assert _violations(stack) == set()
