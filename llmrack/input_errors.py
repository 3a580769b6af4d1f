"""One wording for mistakes in llmrack's typed inputs (the deployment spec, the Pulumi stack config).

A pydantic ValidationError becomes one line per key: `<key>: <value> is not valid: <why>`, `<key>: required key is
missing`, or `<key>: unknown key; did you mean 'x'? allowed keys here: ...`. Keys are spelled as the user writes
them (a model's aliases where it has them, such as the camelCase keys of a Pulumi stack file).
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

_NOISE = ("function-", "literal[", "constrained-int")


def location(loc: tuple[int | str, ...]) -> str:
    """The dotted key of an error location, without pydantic's validator and union-branch markers."""
    return ".".join(str(p) for p in loc if not str(p).startswith(_NOISE))


def keys_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed where `loc` points (its last part is the key itself); [] where that is not a model."""
    for part in loc[:-1]:
        field = _field(model, str(part))
        sub = getattr(field, "annotation", None) if field else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return []
        model = sub
    return [f.alias or name for name, f in model.model_fields.items()]


def _field(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def describe(err: Any, model: type[BaseModel], prefix: str = "") -> str:
    loc = tuple(err["loc"])
    key = location(loc)
    where = f"{prefix}.{key}" if prefix and key else (prefix or key or "(top level)")
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = keys_at(model, loc)
        near = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        return f"{where}: unknown key; {hint}allowed keys here: {', '.join(allowed)}"
    if kind == "missing":
        return f"{where}: required key is missing"
    message = str(err["msg"]).removeprefix("Value error, ")
    if "input" in err and kind not in ("model_type", "dict_type"):
        return f"{where}: {err['input']!r} is not valid: {message}"
    return f"{where}: {message}"


def describe_all(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per key (union branches repeat one problem several times)."""
    lines: dict[str, str] = {}
    for err in exc.errors():
        lines.setdefault(location(tuple(err["loc"])), describe(err, model, prefix))
    return list(lines.values())
