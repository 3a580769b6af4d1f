"""Parsers for the raw outputs in a node's evidence. Each takes text, returns typed records, and raises
ParseError (with what it expected) on text it does not recognise, rather than guessing."""

from __future__ import annotations

import re


class ParseError(ValueError):
    """Output that is not in the format the parser knows."""


def blocks(text: str, header: re.Pattern[str]) -> dict[str, str]:
    """Text split at the lines `header` matches (a collector's "== npu 3" or "### link"): the header's first group
    -> the lines under it, up to the next header. Lines before the first header belong to none."""
    out: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        match = header.match(line)
        if match:
            current = match.group(1)
            out[current] = ""
        elif current is not None:
            out[current] += line + "\n"
    return out
