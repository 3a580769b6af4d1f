"""Run the batch service under uvicorn until SIGTERM/SIGINT; jobs resume from the store on the next start."""

from __future__ import annotations

import logging
import socket

import uvicorn

from llmrack.batch.app import create_app
from llmrack.batch.settings import BatchSettings
from llmrack.errors import UsageError


def run(settings: BatchSettings, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Bound before the app starts: a second service on this host and port (the runner lease's name) must fail
    # here, before it could take the lease as its own and send lines.
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"--host {settings.host} --port {settings.port}: cannot listen there: {exc.strerror}",
                         hint="is another batch service running on this port?") from None
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
