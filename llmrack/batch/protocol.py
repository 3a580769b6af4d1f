"""OpenAI Files and Batches object shapes, and the one error shape every refusal uses.

Field names and meanings follow OpenAI's API reference, so the official `openai` client parses every answer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

# Endpoints a batch line may call: the ones llmrack's engine and vLLM both serve.
ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
COMPLETION_WINDOWS = ("24h",)
# Lower is sooner (vLLM's convention, and llmrack's engine's); online requests carry 0.
BATCH_PRIORITY = 10
# The header the gateway keys its lower HAProxy priority class on.
PRIORITY_HEADER = "X-Llmrack-Priority"
PRIORITY_HEADER_VALUE = "batch"


class ErrorInfo(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    line: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class BatchAPIError(Exception):
    """A refusal with its HTTP status; the app answers it as {"error": {...}}."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 line: int | None = None, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.info = ErrorInfo(message=message, type=type, param=param, code=code, line=line)


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int] = {"cached_tokens": 0}
    output_tokens: int
    output_tokens_details: dict[str, int] = {"reasoning_tokens": 0}
    total_tokens: int


class BatchErrorItem(BaseModel):
    code: str | None = None
    line: int | None = None
    message: str | None = None
    param: str | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchErrorItem]


BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                      "cancelled"]
TERMINAL: tuple[BatchStatus, ...] = ("failed", "completed", "expired", "cancelled")


class Batch(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    usage: BatchUsage | None = None
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class CreateBatch(BaseModel):
    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


def output_line(line_id: str, custom_id: str, status_code: int, request_id: str | None,
                body: Any) -> dict[str, Any]:
    """One line of an output or error file for a request the upstream answered (any status)."""
    return {"id": line_id, "custom_id": custom_id,
            "response": {"status_code": status_code, "request_id": request_id, "body": body}, "error": None}


def error_line(line_id: str, custom_id: str, code: str, message: str) -> dict[str, Any]:
    """One line of an error file for a request that got no answer at all (the API's `error` object)."""
    return {"id": line_id, "custom_id": custom_id, "response": None, "error": {"code": code, "message": message}}
