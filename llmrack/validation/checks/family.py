"""The interface an accelerator family implements: what the suite needs to know to check one kind of node.

The shared checks (OS and runtime, performance probes) ask the node's family instead of branching on vendors;
the family's own checks read its tools (nvidia-smi, npu-smi, ...). To add a family (say AMD Instinct):

1. a NodeKind and its inventory group (llmrack.validation.expect);
2. `checks/<family>.py` with its checks and a subclass of AcceleratorFamily, registered in `checks/families.py`;
3. a suite module `suite/test_<family>.py` with one test per check in node_checks (once per node) and
   device_checks (once per expected device), marked `pytest.mark.kinds("<kind>")`;
4. what the probe's torch calls its devices (`torch_device`), so the performance checks measure them.

tests/unit/validation/test_family.py holds every registered family to this contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from llmrack.validation.checks.base import CheckFn
from llmrack.validation.expect import NodeKind


class AcceleratorFamily(ABC):
    """One kind of node: its container runtime, its devices as torch sees them, and its own checks."""

    kind: ClassVar[NodeKind]
    # torch's device type for this family's devices ("cuda", "npu"); None: nothing for the device probes.
    torch_device: ClassVar[str | None]
    # What `containerd config dump` (drop-ins merged) must name for the family's container runtime.
    runtime_markers: ClassVar[tuple[str, ...]]
    # Whether the node must carry /etc/llmrack/nccl.env (the nccl_tuning role writes it for NCCL users).
    needs_nccl_env: ClassVar[bool] = False

    @abstractmethod
    def node_checks(self) -> tuple[CheckFn, ...]:
        """Checks run once per node of this family."""

    @abstractmethod
    def device_checks(self) -> tuple[CheckFn, ...]:
        """Checks run once per expected device (called with the device index)."""


class CpuFamily(AcceleratorFamily):
    """A node without accelerators: only the shared checks apply."""

    kind = NodeKind.cpu
    torch_device = None
    runtime_markers = ("runtimes.runc", "io.containerd.runc.v2")

    def node_checks(self) -> tuple[CheckFn, ...]:
        return ()

    def device_checks(self) -> tuple[CheckFn, ...]:
        return ()


class UnknownFamily(LookupError):
    """A node kind no registered family implements."""
