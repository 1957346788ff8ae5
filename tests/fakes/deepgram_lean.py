"""The fake Deepgram on ``_lean_ws`` (``FakeDeepgram(lean_socket=True)``): the same upgrade
checks, the same ``_Stream`` state machine, a fraction of the CPU a message.

Audio that sends nothing (most of it) is taken by ``_Stream.take_quiet_audio`` without a
coroutine. Any other message is handed to the stream's ``message`` coroutine and stepped
to its end at once:
the stream only waits when a scripted delay says so (``final_delay_s``); then that message
finishes in a task and the ones behind it queue, so the order is the socket's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from websockets.http11 import Request, Response

from fakes._lean_ws import LeanServerSocket

if TYPE_CHECKING:
    from fakes.deepgram import FakeDeepgram, _Stream

__all__ = ["serve_lean"]


async def serve_lean(fake: FakeDeepgram) -> asyncio.Server:
    async def upgrade(request: Request) -> Response | None:
        return await fake._upgrade(None, request)  # type: ignore[arg-type]

    def open_sink(sock: LeanServerSocket) -> _Driver:
        from fakes.deepgram import _Stream

        assert sock.request is not None
        session = fake.open_session(sock.request)
        return _Driver(_Stream(fake, sock, session), sock)  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: LeanServerSocket(upgrade, open_sink), "127.0.0.1", 0
    )


class _Driver:
    """One socket's messages into its ``_Stream``, in order."""

    def __init__(self, stream: _Stream, sock: LeanServerSocket) -> None:
        self.stream, self.sock = stream, sock
        self.loop = asyncio.get_running_loop()
        self.queued: deque[str | bytes] = deque()
        self.busy: asyncio.Task[None] | None = None
        self.over = False
        stream.start_watchdog(self.loop)

    def message(self, data: str | bytes) -> None:
        if self.over:
            return
        if self.busy is not None:
            self.queued.append(data)
            return
        if type(data) is bytes and data and self.stream.take_quiet_audio(data):
            self.stream._waiting_since = self.loop.time()
            return
        self.stream._waiting_since = None
        coro = self.stream.message(data)
        try:
            waits_on = coro.send(None)
        except StopIteration as stop:
            self._handled(bool(stop.value))
            return
        self.busy = asyncio.ensure_future(self._finish(coro, waits_on))

    def closed(self) -> None:
        self.over = True
        self.stream.stop_watchdog()
        if self.busy is not None:
            self.busy.cancel()
        session = self.stream.session
        session.close_code = self.sock.close_code
        session.closed.set()

    def _handled(self, over: bool) -> None:
        if over:
            self.over = True
            self.stream.stop_watchdog()
        else:
            self.stream._waiting_since = self.loop.time()

    async def _finish(self, coro: Coroutine[Any, Any, bool], waits_on: Any) -> None:
        """Run a message that waits to its end as a task would, then the queued ones."""
        try:
            while True:
                if waits_on is None:
                    await asyncio.sleep(0)
                else:
                    waits_on._asyncio_future_blocking = False
                    await asyncio.wait([waits_on])
                try:
                    waits_on = coro.send(None)
                except StopIteration as stop:
                    self._handled(bool(stop.value))
                    break
        finally:
            coro.close()
            self.busy = None
        while self.queued and self.busy is None and not self.over:
            self.message(self.queued.popleft())
