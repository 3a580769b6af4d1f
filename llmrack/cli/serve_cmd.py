"""`llmrack serve`: the serving layer's server (the same command as `python -m serving`)."""

from __future__ import annotations

from serving.cli import serve

__all__ = ["serve"]
