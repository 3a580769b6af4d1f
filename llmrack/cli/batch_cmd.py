"""`llmrack batch`: the batch service (`serve`) and a client for it (`submit`, `status`, `results`)."""

from __future__ import annotations

from pathlib import Path

import typer

from llmrack.batch.protocol import BATCH_PRIORITY
from llmrack.batch.settings import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_PORT,
    DEFAULT_RETRY_FOR_S,
    BatchSettings,
)
from llmrack.batch.tenants import KeyFileError, Tenants
from llmrack.errors import UsageError

app = typer.Typer(help="OpenAI Batch API on the rack: run the service, submit jobs, follow them.",
                  no_args_is_help=True)


def _readable(path: Path | None, option: str) -> None:
    if path is not None and not path.is_file():
        raise UsageError(f"{option} {path}: no such file", hint="give the path of an existing file")


@app.command("serve")
def serve(
    upstream: str = typer.Option(..., "--upstream", help="the rack's OpenAI API (the gateway, or one node)"),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port of the batch API"),
    state: Path = typer.Option(..., "--state", help="directory for the SQLite store (created if missing)"),
    api_key_file: Path = typer.Option(None, "--api-key-file",
                                      help="clients' API keys, one per line; a key's tenant owns its jobs"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    upstream_api_key_file: Path = typer.Option(None, "--upstream-api-key-file",
                                               help="file whose first key the service sends to the upstream"),
    prometheus: str = typer.Option(None, "--prometheus",
                                   help="Prometheus URL (or an engine's /metrics URL) to read queue depth from"),
    max_file_bytes: int = typer.Option(DEFAULT_MAX_FILE_BYTES, "--max-file-bytes", help="largest input file"),
    max_inflight: int = typer.Option(DEFAULT_MAX_INFLIGHT, "--max-inflight",
                                     help="most batch requests at the rack at once (the pace adapts below it)"),
    priority: int = typer.Option(BATCH_PRIORITY, "--priority",
                                 help="engine priority sent with every line (lower is sooner; 0 sends none)"),
    retry_for: float = typer.Option(DEFAULT_RETRY_FOR_S, "--retry-for",
                                    help="seconds a line is retried while the rack is busy or away"),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error"),
) -> None:
    """Serve the Files and Batches API, sending every line to --upstream at low priority."""
    # fastapi and uvicorn (the serving extra) load only when the service starts.
    from llmrack.batch.server import run  # noqa: PLC0415

    if not upstream.startswith(("http://", "https://")):
        raise UsageError(f"--upstream {upstream!r} is not an http(s) URL", hint="e.g. --upstream http://gateway:8000")
    for value, option in ((port, "--port"), (max_file_bytes, "--max-file-bytes"), (max_inflight, "--max-inflight")):
        if value < 1:
            raise UsageError(f"{option} {value}: must be at least 1")
    if priority < 0:
        raise UsageError(f"--priority {priority}: must be 0 (none) or positive (lower is sooner)")
    _readable(upstream_api_key_file, "--upstream-api-key-file")
    try:
        Tenants.from_file(api_key_file)
    except KeyFileError as exc:
        raise UsageError(str(exc)) from None
    if state.exists() and not state.is_dir():
        raise UsageError(f"--state {state} is a file", hint="give a directory for the batch store")
    run(BatchSettings(upstream=upstream, state=state, host=host, port=port, api_key_file=api_key_file,
                      upstream_api_key_file=upstream_api_key_file, prometheus=prometheus,
                      max_file_bytes=max_file_bytes, max_inflight=max_inflight, priority=priority,
                      retry_for_s=retry_for), log_level)
