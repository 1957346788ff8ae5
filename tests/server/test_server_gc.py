"""A started instance hides its start-up objects from the garbage collector."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable

from callbridge.server.app import create_app, uvicorn_config
from callbridge.server.serve import DrainingServer
from callbridge.settings import Settings


async def test_start_up_objects_are_frozen_out_of_full_collections(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    app = create_app(settings)
    server = DrainingServer(uvicorn_config(app, "127.0.0.1", 0), app.state.edge, settings)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    gc.unfreeze()
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()  # why it could not start
                await asyncio.sleep(0.005)
        # The app and everything imported to build it no longer count in a collection.
        assert gc.get_freeze_count() > 10_000
        assert not any(o is app for o in gc.get_objects())
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
        server.should_exit = True
        await asyncio.wait({task}, timeout=10)
