"""Where CLI output goes: data to stdout, messages to stderr (so `--json | jq` always works)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Tables piped to a file or another program get a wide fixed width rather than rich's 80 columns.
stdout = Console(width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, soft_wrap=True)


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def info(message: str) -> None:
    stderr.print(message, highlight=False)
