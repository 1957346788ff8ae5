"""The fake Deepgram on ``_lean_ws`` (``FakeDeepgram(lean_socket=True)``): the same upgrade
checks, the same ``_Stream`` state machine, a fraction of the CPU a message.

Audio that sends nothing (most of it) is taken by ``take_quiet_audio`` without a
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
from fakes.deepgram_request import _speech

if TYPE_CHECKING:
    from fakes.deepgram import FakeDeepgram, _Stream

__all__ = ["serve_lean", "take_quiet_audio"]

_FRAME_BYTES = 160  # as the stream counts audio: 20 ms of μ-law 8 kHz


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
        if type(data) is bytes and data and take_quiet_audio(self.stream, data):
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


def take_quiet_audio(stream: _Stream, message: bytes) -> bool:
    """Take an audio message at once if it sends nothing and ends nothing: every frame
    is silence outside an utterance, a pause short of the endpoint, or speech that is
    not the interim's frame. True: taken, exactly as ``stream.message`` would have; False:
    nothing was touched, ``stream.message`` must run. Most of a stream's audio is such, so
    the lean socket asks this first (no coroutine per message)."""
    fake, session = stream.fake, stream.session
    if fake.close_after_frames is not None or fake.malformed_after_frames is not None:
        return False
    if fake.interim_every_frames and stream.pending:
        return False
    in_speech, silent, spoken = stream.in_speech, stream.silent_frames, stream.speech_frames
    endpointing, interim_at = stream.endpointing_frames, fake.interim_after_frames
    interims = not fake.interim_every_frames and bool(stream.current)
    level = fake.silence_level
    for at in range(0, len(message), _FRAME_BYTES):
        if _speech(message[at : at + _FRAME_BYTES], level):
            if not in_speech:
                return False  # SpeechStarted
            silent, spoken = 0, spoken + 1
            if interims and spoken == interim_at:
                return False  # the interim result
        elif in_speech:
            silent += 1
            if endpointing is not None and silent >= endpointing:
                return False  # the final result
    frames = -(-len(message) // _FRAME_BYTES)
    session.audio_messages += 1
    session.messages.append(len(message))
    session.audio.extend(message)
    session.frames += frames
    session.frames_handled += frames
    for at in range(0, len(message), _FRAME_BYTES):  # the same float sums as _audio's
        stream.audio_s += len(message[at : at + _FRAME_BYTES]) / 8000
    stream.silent_frames, stream.speech_frames = silent, spoken
    return True
