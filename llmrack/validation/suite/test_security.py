"""Security: the gateway's TLS certificate is not near its end (the same threshold as the expiry alert)."""

from __future__ import annotations

from typing import Any

from llmrack.validation import checks


def test_tls_expiry(node: Any, verdict: Any) -> None:
    verdict(checks.security_tls_expiry)
