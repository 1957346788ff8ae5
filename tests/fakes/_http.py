"""Run a small Starlette app under uvicorn on 127.0.0.1 with a free port."""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp

from fakes._link import CostlyLink


class HttpFake:
    """Base for the HTTP fakes: ``async with`` starts the server, leaving stops it.

    ``release`` is set on exit so handlers that model a hung vendor can return and the
    server can stop without waiting for them. ``new_connection_s`` > 0 puts a
    ``CostlyLink`` in front: every new TCP connection costs that long, keep-alive is free.
    """

    path_prefix = ""
    ws = "none"  # uvicorn's WebSocket implementation; "auto" for fakes with sockets

    def __init__(self, *, new_connection_s: float = 0.0) -> None:
        self.new_connection_s = new_connection_s
        self.link: CostlyLink | None = None
        self.release = asyncio.Event()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._port = 0

    def app(self) -> ASGIApp:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        assert self._server is not None, f"use 'async with {type(self).__name__}(...)'"
        port = self.link.port if self.link is not None else self._port
        return f"http://127.0.0.1:{port}{self.path_prefix}"

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(), log_level="warning", lifespan="off", ws=self.ws,
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=1, access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    await self._task
                await asyncio.sleep(0.001)
        if self.new_connection_s > 0:
            self.link = CostlyLink(self._port, self.new_connection_s)
            await self.link.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._task is not None
        self.release.set()
        self._server.should_exit = True
        await self._task
        if self.link is not None:
            await self.link.close()
