"""Write the Ansible inventory a Pulumi stack exported (`pulumi stack output --json`) to an inventory dir.

The stack output `inventory` holds `hosts` (hosts.yml) and `deployment` (the spec mapping). The spec is
parsed with llmrack.spec before anything is written, so a stack and a rack can never disagree on it. Its serving
nodes must make whole replicas of the plan's nodes_per_replica (llmrack.contracts.inventory): a stack that wrote
none (one written before replicas spanned nodes) gets them here, in the order it lists its hosts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from llmrack import catalog
from llmrack.contracts.inventory import (
    DEPLOYMENT_FILE,
    DEPLOYMENT_VAR,
    HOSTS_FILE,
    NODE_GROUPS,
    REPLICA_VAR,
    InventoryError,
    assign_replicas,
    replicas,
    serving_hosts,
)
from llmrack.errors import UsageError
from llmrack.plan import plan
from llmrack.spec import DeploymentSpec, parse_spec


def nodes_per_replica(deployment: Any, where: str) -> int:
    """The plan's nodes per replica of a deployment spec mapping (1 when the plan does not fit: the spec's
    own checks say why elsewhere)."""
    spec = deployment if isinstance(deployment, DeploymentSpec) else parse_spec(deployment, where)
    result = plan(spec.plan_request(), catalog.accelerator(spec.accelerator))
    return result.nodes_per_replica if result.fits else 1


def check_replicas(hosts: dict[str, Any], size: int, where: str) -> None:
    """Give the serving hosts replica membership if they have none; refuse replicas of the wrong size."""
    groups = serving_hosts(hosts)
    every = {h: hv if isinstance(hv, dict) else {} for g in groups.values() for h, hv in g.items()}
    try:
        if size > 1 and not any(REPLICA_VAR in hv for hv in every.values()):
            for host, extra in assign_replicas(list(every), size).items():
                every[host].update(extra)
        found = replicas(every)
    except InventoryError as exc:
        raise UsageError(f"{where}: {exc}") from None
    wrong = {name: len(m) for name, m in found.items() if len(m) != size}
    if wrong:
        listed = ", ".join(f"{name} ({n})" for name, n in sorted(wrong.items()))
        raise UsageError(f"{where}: the plan's replica is {size} node(s), and replicas {listed} are not: give "
                         "llmrack_replica and llmrack_replica_rank 0..N-1 to exactly that many nodes per replica")


def parse_stack_outputs(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{where}: not JSON ({exc.msg} at line {exc.lineno}); give `pulumi stack output --json`"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected the JSON object `pulumi stack output --json` prints")
    return data


def write_inventory(outputs: dict[str, Any], out_dir: Path, where: str, output_name: str = "inventory") -> list[Path]:
    """Write hosts.yml and group_vars/all/deployment.yml; returns the paths written."""
    inventory = outputs.get(output_name)
    if not isinstance(inventory, dict) or "hosts" not in inventory or "deployment" not in inventory:
        known = ", ".join(sorted(outputs)) or "none"
        raise UsageError(f"{where}: no stack output {output_name!r} with hosts and deployment (outputs: {known}); "
                         "only stacks with a fleet (llmrack:fleet kind aws, huaweicloud or static) export one")
    spec = parse_spec(inventory["deployment"], f"{where} output {output_name}.deployment")
    if not any(serving_hosts(inventory["hosts"]).values()):
        raise UsageError(f"{where}: output {output_name}.hosts lists no serving node in {', '.join(NODE_GROUPS)}")
    check_replicas(inventory["hosts"], nodes_per_replica(spec, where), f"{where} output {output_name}.hosts")
    hosts_file = out_dir / HOSTS_FILE
    deployment_file = out_dir / DEPLOYMENT_FILE
    try:
        deployment_file.parent.mkdir(parents=True, exist_ok=True)
        hosts_file.write_text(
            f"# Written by `llmrack inventory from-stack` from {where}; re-run it after `pulumi up`.\n"
            + yaml.safe_dump(inventory["hosts"], sort_keys=False)
        )
        deployment_file.write_text(
            f"# The deployment spec {spec.name!r} of {where}, parsed by llmrack.spec like the stack's.\n"
            + yaml.safe_dump({DEPLOYMENT_VAR: inventory["deployment"]}, sort_keys=False)
        )
    except OSError as exc:
        raise UsageError(f"cannot write the inventory under {out_dir}: {exc.strerror or exc}") from None
    return [hosts_file, deployment_file]
