"""Parsers for the raw outputs in a node's evidence. Each takes text, returns typed records, and raises
ParseError (with what it expected) on text it does not recognise, rather than guessing."""

from __future__ import annotations


class ParseError(ValueError):
    """Output that is not in the format the parser knows."""
