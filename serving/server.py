"""Run the app under uvicorn with graceful drain.

On SIGTERM: /ready turns 503 and new requests get 503 (so a load balancer takes the replica out while it still
answers), in-flight requests run to completion for up to --drain-timeout seconds, whatever is left is aborted, and
the process exits 0. A second SIGTERM, or SIGINT, stops at once.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn

from serving.app import create_app
from serving.settings import ServingSettings
from serving.state import ServerState

log = logging.getLogger("serving")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState, drain_timeout: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout = drain_timeout
        self._deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._deadline is None:
            # Runs in the signal handler: only set flags; on_tick does the rest on the event loop.
            self._deadline = time.monotonic() + self.drain_timeout
            self.state.begin_drain()
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._deadline is not None and not self.should_exit:
            now = time.monotonic()
            if not self.state.inflight:
                log.info("drained: no request in flight; exiting")
                self.should_exit = True
            elif self._forced is not None:
                if now >= self._forced:
                    log.warning("exiting with %d request(s) that did not end after the abort",
                                len(self.state.inflight))
                    self.should_exit = True
            elif now >= self._deadline:
                log.warning("drain timeout: aborting %d request(s) still in flight", len(self.state.inflight))
                self.state.abort_inflight()
                # The aborts reach their clients within a step or two (finish_reason "abort"); wait for that.
                self._forced = now + 5.0
        return await super().on_tick(counter)

    _forced: float | None = None


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run(settings: ServingSettings) -> None:
    """Serve until stopped; returns normally after a drain (exit status 0)."""
    configure_logging(settings.log_level)
    state = ServerState(settings)
    app = create_app(settings, state)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
        timeout_graceful_shutdown=5, lifespan="on",
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
    )
    server = DrainingServer(config, state, settings.drain_timeout)
    server.run()
