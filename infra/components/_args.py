"""Argument checks shared by the components: one error type, naming the argument and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from infra.rules import StackConfigError


class ComponentArgsError(StackConfigError):
    """A component argument out of range; raised before the component creates anything."""


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ComponentArgsError(f"{key}: {value!r} is not valid: {allowed}")



@dataclass(kw_only=True)
class CloudFleetArgs:
    """What every cloud fleet is given, whichever the provider: where, how many, and what the inventory says."""

    region: pulumi.Input[str]
    count: int
    security_group_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    devices_per_node: int  # the catalog's, for the inventory's llmrack_accelerator_count
    serving_port: int
    deployment: dict[str, Any]
    ssh_user: str
    tags: dict[str, str] = field(default_factory=dict)

    def check_count(self) -> None:
        check(1 <= self.count <= 256, f"{type(self).__name__}.count", self.count, "must be between 1 and 256")
