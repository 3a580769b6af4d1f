"""Run the Pulumi program of one stack under the official mocks (pulumi.runtime.set_mocks).

The config is the stack file's own `config:` map; secrets, which never live in stack files, are added
as secret config, the way `pulumi config set --secret` does. The mocks return inputs as outputs and
fill only what a cloud or the API server would assign (names, addresses, versions).
"""

from __future__ import annotations

import json
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks, settings, stack
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "infra" / "__main__.py"
# Pulumi's wire encoding of a secret value: {SIG_KEY: SECRET_SIG, "value": ...} (pulumi/sdk/proto docs).
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SECRETS = {"llmrack:apiKeys": ["test-key-1", "test-key-2"], "llmrack:kubeconfig": "apiVersion: v1\nkind: Config\n"}


class ProgramMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.counter = 0

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.counter += 1
        outputs = dict(args.inputs)
        if args.typ.startswith("kubernetes:") and not args.typ.startswith("kubernetes:helm"):
            metadata = dict(outputs.get("metadata") or {})
            # The provider auto-names objects from the resource name plus a random suffix.
            metadata.setdefault("name", f"{args.name}-{self.counter:08x}")
            outputs["metadata"] = metadata
        elif args.typ == "aws:ec2/instance:Instance":
            outputs["private_ip"] = f"10.0.0.{self.counter}"
        elif args.typ == "huaweicloud:Ecs/instance:Instance":
            outputs["access_ip_v4"] = f"192.168.0.{self.counter}"
        elif args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
            outputs["latest_version"] = 1
        elif args.typ == "aws:ec2/placementGroup:PlacementGroup":
            outputs.setdefault("name", f"{args.name}-{self.counter:08x}")
        elif args.typ == "pulumi:pulumi:StackReference":
            outputs["outputs"] = {"kubeconfig": "apiVersion: v1\nkind: Config\n"}
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


@dataclass
class Resource:
    urn: str
    type: str
    name: str
    state: dict[str, Any]


@dataclass
class Run:
    resources: list[Resource]
    outputs: dict[str, Any]

    def of_type(self, rtype: str) -> list[Resource]:
        return [r for r in self.resources if r.type == rtype]

    def one(self, rtype: str, name: str | None = None) -> Resource:
        found = [r for r in self.of_type(rtype) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {rtype} {name or ''}, found {[r.name for r in found]}"
        return found[0]


def _unwrap(value: Any) -> Any:
    """State as the engine would store it, with secrets unwrapped (the mock monitor keeps the wire form)."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return _unwrap(value["value"])
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def stack_config(stack_name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / f"Pulumi.{stack_name}.yaml").read_text())
    config: dict[str, Any] = data["config"]
    return config


def _encode(value: Any) -> str:
    # The CLI hands structured config to the program as JSON text, plain strings as they are.
    return value if isinstance(value, str) else json.dumps(value)


def run_stack(
    stack_name: str,
    overrides: dict[str, Any] | None = None,
    remove: tuple[str, ...] = (),
    secrets: dict[str, Any] | None = None,
    plain: dict[str, Any] | None = None,
) -> tuple[Run | None, BaseException | None, mocks.MockMonitor]:
    """Run the program; returns (run, error, monitor). `plain` adds keys as non-secret config."""
    config = {**stack_config(stack_name), **(overrides or {})}
    for key in remove:
        config.pop(key, None)
    secret_values = dict(SECRETS if secrets is None else secrets)
    config.update(secret_values)
    config.update(plain or {})
    settings.set_root_resource(None)
    pulumi.runtime.set_all_config({k: _encode(v) for k, v in config.items()}, list(secret_values))
    monitor = mocks.MockMonitor(ProgramMocks())
    pulumi.runtime.set_mocks(monitor.mocks, project="llmrack", stack=stack_name, preview=False, monitor=monitor)
    root = settings.get_root_resource()
    error: BaseException | None = None
    try:
        _sync_await(stack.run_pulumi_func(lambda: runpy.run_path(str(PROGRAM))))
    except Exception as exc:  # the caller asserts on it
        error = exc
    if error is not None:
        return None, error, monitor
    outputs = {k: _sync_await(pulumi.Output.from_input(v).future()) for k, v in root.outputs.items()}
    resources = [
        Resource(urn, urn.split("::")[2].split("$")[-1], urn.split("::")[-1], _unwrap(reg.state))
        for urn, reg in monitor.get_registered_resources().items()
    ]
    return Run(resources, outputs), None, monitor


def kubernetes_objects(run: Run) -> list[tuple[Resource, dict[str, Any]]]:
    """Every Kubernetes API object the program declares (Helm releases and providers are not objects)."""
    out = []
    for res in run.resources:
        if not res.type.startswith("kubernetes:") or res.type.startswith(("kubernetes:helm", "pulumi:providers")):
            continue
        obj = {k: v for k, v in res.state.items() if k in ("apiVersion", "kind", "metadata", "spec", "data",
                                                          "stringData", "type", "rules", "roleRef", "subjects")}
        out.append((res, obj))
    return out
