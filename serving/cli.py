"""The `serve` command, shared by `llmrack serve` and `python -m serving` (the container entrypoint).

Only light imports at module level: torch and transformers load when the server starts.
"""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from llmrack.contracts.serving_defaults import DEFAULT_MAX_NUM_SEQS, DEFAULT_MAX_QUEUE, DEFAULT_PORT, DRAIN_TIMEOUT_S
from serving.model.devices import Device, DType


def serve(
    model: Path = typer.Option(..., "--model", help="Hugging Face model directory on local disk"),
    served_model_name: str = typer.Option(None, "--served-model-name", help="name clients use (default: dir name)"),
    host: str = typer.Option("0.0.0.0", "--host", help="address to listen on"),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port"),
    device: Device = typer.Option(Device.cpu, "--device", help="cpu, cuda, or npu (Ascend, needs torch_npu)"),
    dtype: DType = typer.Option(None, "--dtype", help="weights/activations dtype (default: fp32 on cpu, else bf16)"),
    max_num_seqs: int = typer.Option(DEFAULT_MAX_NUM_SEQS, "--max-num-seqs",
                                     help="sequences decoded together (size it from `llmrack plan`)"),
    max_model_len: int = typer.Option(None, "--max-model-len", help="prompt + completion tokens per sequence"),
    max_queue: int = typer.Option(DEFAULT_MAX_QUEUE, "--max-queue",
                                  help="requests waiting beyond max-num-seqs before 429"),
    api_key_file: Path = typer.Option(None, "--api-key-file", help="file of API keys, one per line"),
    drain_timeout: float = typer.Option(float(DRAIN_TIMEOUT_S), "--drain-timeout",
                                       help="seconds in-flight requests get on SIGTERM"),
    quantize: str = typer.Option(None, "--quantize", help="'int8': dynamic INT8 Linear layers (cpu, float32)"),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)"),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error"),
    ssl_certfile: Path = typer.Option(None, "--ssl-certfile", help="serve TLS with this certificate (chain), PEM"),
    ssl_keyfile: Path = typer.Option(None, "--ssl-keyfile", help="the certificate's private key, PEM"),
) -> None:
    """Serve a model with an OpenAI-compatible API (continuous batching engine)."""
    from serving.model.loader import ModelLoadError, check_dir
    from serving.settings import ServingSettings

    try:
        settings = ServingSettings(
            model=model, served_model_name=served_model_name, host=host, port=port, device=device, dtype=dtype,
            max_num_seqs=max_num_seqs, max_model_len=max_model_len, max_queue=max_queue, api_key_file=api_key_file,
            drain_timeout=drain_timeout, quantize=quantize, threads=threads, log_level=log_level,
            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
        )
        check_dir(model)
        if api_key_file is not None:
            from serving.auth import ApiKeys

            ApiKeys.from_file(api_key_file)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise typer.BadParameter(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    except (ModelLoadError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    from serving.server import run

    run(settings)


def main() -> None:
    typer.run(serve)
