"""`llmrack batch`: the batch service (`serve`) and a client for it (`submit`, `status`, `results`)."""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import typer
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from llmrack.batch.client import BatchClient, progress
from llmrack.batch.protocol import BATCH_PRIORITY, TERMINAL, Batch
from llmrack.batch.settings import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_PORT,
    DEFAULT_RETRY_FOR_S,
    BatchSettings,
)
from llmrack.batch.store import Store, StoreError, is_database_url
from llmrack.batch.tenants import KeyFileError, Tenants
from llmrack.cli.output import info, stdout
from llmrack.errors import EXIT_FAILURE, LlmrackError, UsageError

app = typer.Typer(help="OpenAI Batch API on the rack: run the service, submit jobs, follow them.",
                  no_args_is_help=True)


def _readable(path: Path | None, option: str) -> None:
    if path is not None and not path.is_file():
        raise UsageError(f"{option} {path}: no such file", hint="give the path of an existing file")


@app.command("serve")
def serve(
    upstream: str = typer.Option(..., "--upstream", help="the rack's OpenAI API (the gateway, or one node)"),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port of the batch API"),
    state: str = typer.Option(..., "--state", help="directory of the SQLite store (created if missing), or a "
                                                    "postgresql://USER@HOST/DB URL (password from PGPASSFILE)"),
    api_key_file: Path = typer.Option(None, "--api-key-file",
                                      help="clients' API keys, one per line; a key's tenant owns its jobs"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    upstream_api_key_file: Path = typer.Option(None, "--upstream-api-key-file",
                                               help="file whose first key the service sends to the upstream"),
    upstream_ca_file: Path = typer.Option(None, "--upstream-ca-file",
                                          help="CA bundle that signs the upstream's certificate (the rack CA)"),
    prometheus: str = typer.Option(None, "--prometheus",
                                   help="Prometheus URL (or an engine's /metrics URL) to read queue depth from"),
    max_file_bytes: int = typer.Option(DEFAULT_MAX_FILE_BYTES, "--max-file-bytes", help="largest input file"),
    max_inflight: int = typer.Option(DEFAULT_MAX_INFLIGHT, "--max-inflight",
                                     help="most batch requests at the rack at once (the pace adapts below it)"),
    priority: int = typer.Option(BATCH_PRIORITY, "--priority",
                                 help="engine priority sent with every line (lower is sooner; 0 sends none)"),
    retry_for: float = typer.Option(DEFAULT_RETRY_FOR_S, "--retry-for",
                                    help="seconds a line is retried while the rack is busy or away"),
    lease: float = typer.Option(DEFAULT_LEASE_S, "--lease",
                                help="seconds a standby on the same store waits after the active service stops "
                                     "renewing its runner lease before it takes the jobs over"),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error"),
) -> None:
    """Serve the Files and Batches API, sending every line to --upstream at low priority. Several services on one
    store (--state postgresql://...) all serve the API; one at a time sends the lines, the others stand by."""
    # fastapi and uvicorn (the serving extra) load only when the service starts.
    from llmrack.batch.server import run  # noqa: PLC0415

    if not upstream.startswith(("http://", "https://")):
        raise UsageError(f"--upstream {upstream!r} is not an http(s) URL", hint="e.g. --upstream http://gateway:8000")
    for value, option in ((port, "--port"), (max_file_bytes, "--max-file-bytes"), (max_inflight, "--max-inflight")):
        if value < 1:
            raise UsageError(f"{option} {value}: must be at least 1")
    if lease < 1:
        raise UsageError(f"--lease {lease}: must be at least 1 second")
    if priority < 0:
        raise UsageError(f"--priority {priority}: must be 0 (none) or positive (lower is sooner)")
    _readable(upstream_api_key_file, "--upstream-api-key-file")
    _readable(upstream_ca_file, "--upstream-ca-file")
    try:
        Tenants.from_file(api_key_file)
    except KeyFileError as exc:
        raise UsageError(str(exc)) from None
    if is_database_url(state):
        try:
            Store(state).close()  # the schema is made here, and a database that does not answer is said at once
        except StoreError as exc:
            raise UsageError(f"--state: {exc}", hint="check the URL's host, port, user and database") from None
    elif Path(state).exists() and not Path(state).is_dir():
        raise UsageError(f"--state {state} is a file", hint="give a directory for the batch store")
    run(BatchSettings(upstream=upstream, state=state, host=host, port=port, api_key_file=api_key_file,
                      upstream_api_key_file=upstream_api_key_file, upstream_ca_file=upstream_ca_file,
                      prometheus=prometheus,
                      max_file_bytes=max_file_bytes, max_inflight=max_inflight, priority=priority,
                      retry_for_s=retry_for, lease_s=lease), log_level)


@app.command("wheelhouse")
def wheelhouse_cmd(
    dest: Path = typer.Argument(..., help="directory for the wheels (created if missing)"),
) -> None:
    """llmrack's wheel and every wheel the batch service needs, for a gateway host without PyPI: the batch role
    installs from it (batch_wheel: the llmrack wheel; batch_pip_find_links: DEST copied to the host or served)."""
    from llmrack.batch.wheelhouse import wheelhouse  # noqa: PLC0415

    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is a file", hint="give a directory for the wheels")
    wheel = wheelhouse(dest)
    info(f"{dest}: {len(list(dest.glob('*.whl')))} wheels; batch_wheel: {wheel}")


# ---- the client commands ---------------------------------------------------------------------------------------

URL_OPTION = typer.Option("http://127.0.0.1:8100", "--url", envvar="LLMRACK_BATCH_URL",
                          help="the batch service (env LLMRACK_BATCH_URL)")
KEY_OPTION = typer.Option(None, "--api-key-file", envvar="LLMRACK_API_KEY_FILE",
                          help="file holding your API key (env LLMRACK_API_KEY_FILE; or set LLMRACK_API_KEY)")


def _client(url: str, key_file: Path | None) -> BatchClient:
    key = os.environ.get("LLMRACK_API_KEY")
    if key_file is not None:
        try:
            key = key_file.read_text().strip().splitlines()[0].strip()
        except (OSError, IndexError):
            raise UsageError(f"--api-key-file {key_file}: cannot read a key from it",
                             hint="the file's first line is the key") from None
    return BatchClient(url, key)


@app.command("submit")
def submit(
    file: Path = typer.Argument(..., help="batch input file: one JSON request per line (OpenAI's batch format)"),
    endpoint: str = typer.Option(None, "--endpoint", help="default: the url of the file's lines"),
    completion_window: str = typer.Option("24h", "--completion-window"),
    url: str = URL_OPTION,
    api_key_file: Path = KEY_OPTION,
) -> None:
    """Upload FILE and start a batch job; prints the job's id (stdout)."""
    batch = _client(url, api_key_file).submit(file, endpoint, completion_window)
    info(f"{batch.id}: {batch.request_counts.total} lines, {batch.status} (follow: llmrack batch status "
         f"{batch.id} --watch)")
    print(batch.id)


def _render(batch: Batch) -> Table:
    p = progress(batch)
    table = Table.grid(padding=(0, 2))
    bar = ProgressBar(total=max(p.total, 1), completed=p.done, width=40)
    table.add_row(f"[bold]{batch.id}[/bold]", batch.status, bar, f"{p.done}/{p.total}")
    rate = f"{p.tokens_per_s:.1f} tokens/s" if p.tokens_per_s is not None else "- tokens/s"
    eta = f"ETA {timedelta(seconds=round(p.eta_s))}" if p.eta_s is not None else ""
    table.add_row("", f"done {p.completed}", f"failed {p.failed}", f"{rate}  {eta}".strip())
    return table


@app.command("status")
def status(
    batch_id: str = typer.Argument(..., help="the job's id (batch_...)"),
    watch: bool = typer.Option(False, "--watch", help="follow the job until it ends"),
    as_json: bool = typer.Option(False, "--json", help="the Batch object as JSON"),
    url: str = URL_OPTION,
    api_key_file: Path = KEY_OPTION,
) -> None:
    """Progress of a job: lines done and failed, tokens/s, ETA."""
    client = _client(url, api_key_file)
    batch = client.get(batch_id)
    if as_json:
        print(batch.model_dump_json(indent=2))
        return
    if not watch:
        stdout.print(_render(batch))
        return
    with Live(_render(batch), console=stdout, refresh_per_second=4) as live:
        while batch.status not in TERMINAL:
            time.sleep(1.0)
            batch = client.get(batch_id)
            live.update(_render(batch))
    if batch.status != "completed":
        raise typer.Exit(EXIT_FAILURE)


@app.command("results")
def results(
    batch_id: str = typer.Argument(..., help="the job's id (batch_...)"),
    errors: bool = typer.Option(False, "--errors", help="the error file instead of the output file"),
    output: Path = typer.Option(None, "--output", "-o", help="write to this file instead of stdout"),
    url: str = URL_OPTION,
    api_key_file: Path = KEY_OPTION,
) -> None:
    """A job's output file (or --errors: its error file), one JSON answer per line."""
    client = _client(url, api_key_file)
    batch = client.get(batch_id)
    if batch.status not in TERMINAL:
        raise LlmrackError(f"{batch_id} is {batch.status}: results come when it ends",
                           hint=f"llmrack batch status {batch_id} --watch")
    file_id = batch.error_file_id if errors else batch.output_file_id
    content = client.content(file_id) if file_id else b""
    if output is not None:
        output.write_bytes(content)
        lines = content.count(b"\n")
        info(f"{output}: {lines} lines")
    else:
        sys.stdout.buffer.write(content)
