"""What can go wrong with a model version, as messages for the user (exit codes from llmrack.errors)."""

from __future__ import annotations

from llmrack.errors import EXIT_FAILURE, LlmrackError


class ModelError(LlmrackError):
    """A model directory, source or reference the user gave that cannot be used as asked."""


class VerifyError(LlmrackError):
    """Files that do not match their manifest; the message names every such file."""

    exit_code = EXIT_FAILURE


class TransferError(LlmrackError):
    """A source that did not deliver (unreachable, missing version, refused); a re-run resumes."""

    exit_code = EXIT_FAILURE
