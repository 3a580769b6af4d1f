"""The errors a user can cause, and the exit codes they map to.

Library code raises these; only the CLI turns them into a message on stderr and an exit code,
so a user mistake never ends in a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and found a problem (does not fit, a check failed, the gate refused)
EXIT_USAGE = 2  # the command could not run as asked: bad input, unknown name, unreadable file


class LlmrackError(Exception):
    """Base class: an error whose message is meant for the user, with its exit code."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(LlmrackError):
    """Bad input: a malformed file, an unknown name, a value out of range."""


class NotFoundError(UsageError):
    """A name that is not in a catalog; the message names the nearest entries."""

    @classmethod
    def for_name(cls, kind: str, name: str, known: Iterable[str]) -> NotFoundError:
        known = sorted(known)
        near = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        # get_close_matches misses prefixes like "a100" -> "a100-40g"; add entries that contain the name.
        near += [k for k in known if name.lower() in k and k not in near][: 3 - len(near) if len(near) < 3 else 0]
        suggestion = f"did you mean {', '.join(near)}? " if near else ""
        return cls(f"unknown {kind} {name!r}: {suggestion}known: {', '.join(known)}")


class DoesNotFitError(LlmrackError):
    """A deployment that cannot be placed on the chosen hardware; the message says why."""

    exit_code = EXIT_FAILURE
