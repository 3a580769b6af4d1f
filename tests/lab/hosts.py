"""How the lab tests reach a node: by its profile, and through testinfra over the lab's own inventory."""

from __future__ import annotations

from typing import Any

import testinfra  # type: ignore[import-untyped]

from llmrack.lab import lab
from llmrack.lab.state import NodeState, Profile


def node_of(result: lab.UpResult, profile: Profile) -> NodeState:
    return next(n for n in result.state.nodes if n.profile is profile)


def host_of(result: lab.UpResult, name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=str(result.state.inventory))
