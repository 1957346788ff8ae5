"""Serving one instance: uvicorn, with SIGTERM and SIGINT turned into a drain.

uvicorn on its own answers SIGTERM by closing every WebSocket with 1012 at once: every
caller cut off mid-sentence. Here the first signal starts ``Drain.run`` while the server
keeps listening (so ``/readyz`` can say 503 and late webhooks get a polite answer); only
when the last call has ended does uvicorn shut down, run the lifespan's end (the store is
flushed) and return, and the process exits 0. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from callbridge.server.app import uvicorn_config
from callbridge.server.edge import Edge
from callbridge.settings import Settings
from callbridge.telemetry.logging import log_event

__all__ = ["DrainingServer", "reuse_port_socket", "serve"]

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, edge: Edge, settings: Settings) -> None:
        super().__init__(config)
        self._edge = edge
        self._settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signalled = False
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything built so far (modules, the app, the models) lives as long as the
        # process: move it out of the collector's sight, so a full collection during
        # calls scans only what calls made (≈230k objects at start; a full pass over them
        # took tens of ms of the loop, and every live call's audio waited).
        gc.freeze()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Runs in the signal handler: only flags and a thread-safe hand-off to the loop."""
        if self._signalled or self._loop is None or not self.started:
            log_event(log, logging.WARNING, "drain.aborted", signal=signal.Signals(sig).name)
            super().handle_exit(sig, frame)
            self.should_exit = True
            self.force_exit = True
            return
        self._signalled = True
        self._loop.call_soon_threadsafe(self._start_drain, signal.Signals(sig).name)

    def _start_drain(self, reason: str) -> None:
        # Flip readiness now, before any await: the balancer's next probe must see it.
        self._edge.drain.begin(reason)
        self._drain = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self._edge.drain.run(self._settings.drain_timeout_s, self._settings.drain_message)
        finally:
            self.should_exit = True


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket with ``SO_REUSEPORT``: several worker processes bind the same
    port and the kernel spreads new connections across them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app: FastAPI, settings: Settings, *, reuse_port: bool = False) -> None:
    """Run one instance until it has drained (or a second signal)."""
    config = uvicorn_config(app, settings.host, settings.port)
    server = DrainingServer(config, app.state.edge, settings)
    sockets = [reuse_port_socket(settings.host, settings.port)] if reuse_port else None
    server.run(sockets=sockets)
