"""Run the batch service under uvicorn until SIGTERM/SIGINT; jobs resume from the store on the next start."""

from __future__ import annotations

import logging

import uvicorn

from llmrack.batch.app import create_app
from llmrack.batch.settings import BatchSettings


def run(settings: BatchSettings, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=5)
