"""Run an ASGI app on a real uvicorn server on 127.0.0.1 inside the test's event loop.

    async with running_server(app) as base_url:   # "http://127.0.0.1:54321"
        ...

The server is configured by ``callbridge.server.app.uvicorn_config``, the same function
``callbridge serve`` uses, so tests exercise production's socket settings (no
permessage-deflate, no proxy-header rewriting).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from callbridge.server.app import uvicorn_config

__all__ = ["running_server", "ws_url"]


@asynccontextmanager
async def running_server(
    app: Any, *, startup_timeout_s: float = 10.0, **config: object
) -> AsyncIterator[str]:
    """Start ``app`` on a free port; yield its base URL; shut it down on exit."""
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0, **config))
    # The test process owns its signals; uvicorn must not swap the handlers.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(startup_timeout_s):
            while not server.started:
                if task.done():
                    task.result()  # re-raise why it could not start
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait({task}, timeout=10.0)
        if not task.done():
            server.force_exit = True
            task.cancel()
            await asyncio.wait({task})


def ws_url(base_url: str, path: str = "/media") -> str:
    return base_url.replace("http://", "ws://", 1) + path
