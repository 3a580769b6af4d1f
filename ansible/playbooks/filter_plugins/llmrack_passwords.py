"""`llmrack_bcrypt`: the bcrypt hash that Prometheus' web config and HAProxy's userlist check a password against.

A new hash gets a new random salt, so a play that hashed on every run would rewrite both files every run: the
filter keeps the hash the host already has while it still matches the password, and makes a new one only when
there is none or the password changed. Runs on the controller (the `bcrypt` package of llmrack's dev extra).
"""

from __future__ import annotations

from typing import Any

import bcrypt
from ansible.errors import AnsibleFilterError

# Prometheus checks the hash on every request, HAProxy in its event loop (blocking, ~50 ms here at cost 10):
# the cost Prometheus' documentation uses, not more.
BCRYPT_COST = 10


def llmrack_bcrypt(password: Any, current: Any = "") -> str:
    secret = str(password).encode()
    if not secret:
        raise AnsibleFilterError("llmrack_bcrypt: the password is empty")
    have = str(current or "").strip().encode()
    if have.startswith(b"$2"):
        try:
            if bcrypt.checkpw(secret, have):
                return have.decode()
        except ValueError:  # not a bcrypt hash after all: make a new one
            pass
    hashed: bytes = bcrypt.hashpw(secret, bcrypt.gensalt(BCRYPT_COST))
    return hashed.decode()


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"llmrack_bcrypt": llmrack_bcrypt}
