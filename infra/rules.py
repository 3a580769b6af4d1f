"""What the stack config and the components share: the config error, image pins and the canary split.

infra.config checks every stack key once, before the program registers a single resource; the components import
these from here (never from infra.config) for what they derive from checked values. A mistake raises
StackConfigError naming the key, the value and what is allowed; as a pulumi.RunError it reaches `pulumi up`
without a traceback.
"""

from __future__ import annotations

import re

import pulumi

from llmrack.errors import UsageError

NAMESPACE = "llmrack"  # the config namespace: keys are `llmrack:<name>`
IMAGE_REF = re.compile(r"^(?P<repository>[a-z0-9][a-z0-9._:/-]*[a-z0-9])@(?P<digest>sha256:[0-9a-f]{64})$")


class StackConfigError(UsageError, pulumi.RunError):
    """A stack config mistake. RunError makes `pulumi up` print the message without a Python traceback."""


def parse_image(ref: str, key: str) -> tuple[str, str]:
    """Split `repository@sha256:...`; a tag is refused because it can move under a running Deployment."""
    match = IMAGE_REF.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise StackConfigError(
            f"{key}: {ref!r} is not valid: give an image pinned by digest, REPOSITORY@sha256:<64 hex> "
            "(the digest `llmrack image build` prints); tags are refused"
        )
    return match["repository"], match["digest"]


def canary_replicas(replicas: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for a canary share of `weight` percent, out of the plan's replicas.

    The canary takes replicas from the stable track rather than adding any: accelerators are the
    scarce resource, so a canary must fit in the capacity the plan already holds.
    """
    key = f"{NAMESPACE}:canary.weight"
    canary = round(replicas * weight / 100)
    if replicas < 2 or not 1 <= canary <= replicas - 1:
        shares = [round(100 * k / replicas) for k in range(1, replicas)]
        allowed = f"with {replicas} replicas the shares possible are {shares}%" if shares else (
            f"a canary needs at least 2 replicas (deployment.serving.replicas is {replicas})")
        raise StackConfigError(f"{key}: {weight} is not valid: {allowed}")
    return replicas - canary, canary
