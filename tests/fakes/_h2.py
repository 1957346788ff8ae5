"""Serve an HTTP fake's app under hypercorn, which speaks HTTP/2 (h2c, prior knowledge).

uvicorn speaks HTTP/1.1 only; the LLM clients talk HTTP/2 to vendors that offer it, so
their HTTP/2 path is tested against the same fake app behind this server. ``link``
(a ``CostlyLink``) counts the TCP connections the client opened.
"""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Self

from hypercorn.asyncio import serve
from hypercorn.config import Config

from fakes._http import HttpFake
from fakes._link import CostlyLink


class Http2:
    def __init__(self, fake: HttpFake, *, new_connection_s: float = 0.0) -> None:
        self.fake = fake
        self.link = CostlyLink(0, new_connection_s)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.link.port}{self.fake.path_prefix}"

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) it now
        config.loglevel = "WARNING"
        config.accesslog = None
        config.graceful_timeout = 1.0
        self._task = asyncio.create_task(
            serve(self.fake.app(), config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]
        )
        self.link.target_port = port
        await self.link.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self.fake.release.set()
        await self.link.close()
        self._stop.set()
        await self._task
