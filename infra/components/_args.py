"""Argument checks shared by the components: one error type, naming the argument and what is allowed."""

from __future__ import annotations

from typing import Any

from infra.rules import StackConfigError


class ComponentArgsError(StackConfigError):
    """A component argument out of range; raised before the component creates anything."""


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ComponentArgsError(f"{key}: {value!r} is not valid: {allowed}")

