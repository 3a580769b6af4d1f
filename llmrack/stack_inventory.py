"""Write the Ansible inventory a Pulumi stack exported (`pulumi stack output --json`) to an inventory dir.

The stack output `inventory` holds `hosts` (hosts.yml) and `deployment` (the spec mapping). The spec is
parsed with llmrack.spec before anything is written, so a stack and a rack can never disagree on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from llmrack.contracts.inventory import DEPLOYMENT_FILE, DEPLOYMENT_VAR, HOSTS_FILE, NODE_GROUPS, serving_hosts
from llmrack.errors import UsageError
from llmrack.spec import parse_spec


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
