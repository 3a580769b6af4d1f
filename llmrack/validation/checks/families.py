"""The registered accelerator families, by node kind."""

from __future__ import annotations

from llmrack.validation.checks.ascend import AscendFamily
from llmrack.validation.checks.family import AcceleratorFamily, CpuFamily, UnknownFamily
from llmrack.validation.checks.nvidia import NvidiaFamily
from llmrack.validation.expect import NodeKind

FAMILIES: dict[NodeKind, AcceleratorFamily] = {f.kind: f for f in (CpuFamily(), NvidiaFamily(), AscendFamily())}


def of_kind(kind: NodeKind) -> AcceleratorFamily:
    try:
        return FAMILIES[kind]
    except KeyError:
        raise UnknownFamily(f"no accelerator family implements node kind {kind!r}") from None
