"""The loopback agent: plays the caller back to themselves, paced like a real bot.

It exists so the Twilio edge can be tested end to end before the engine is plugged in,
and it exercises the same outbound path the engine will: 20 ms μ-law frames sent at real
time (never faster: Twilio would buffer it and ``clear`` would then drop seconds), a
``mark`` after each second of audio, and ``clear`` when the caller presses a key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from callbridge.audio.frames import FRAME_MS, ULAW_FRAME_BYTES, Framer
from callbridge.clock import Clock, MonotonicClock
from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallerHungUp,
    CallInfo,
    CallTransport,
    Inbox,
    Line,
    LineEvent,
    MarkPlayed,
)
from callbridge.telemetry.logging import log_event

__all__ = ["FRAMES_PER_MARK", "LoopbackAgent", "loopback_runner"]

log = logging.getLogger(__name__)

FRAMES_PER_MARK = 1000 // FRAME_MS  # one mark per second of audio
_FRAME_S = FRAME_MS / 1000
_MAX_LAG_S = 0.2  # idle longer than this and the schedule restarts from "now"


async def loopback_runner(
    info: CallInfo, transport: CallTransport, line: Line
) -> None:
    """A ``CallRunner`` (the default one until the engine replaces it)."""
    await LoopbackAgent(transport).run(line)


class LoopbackAgent:
    """Echo with pacing; ``clock``/``sleep`` are injectable so tests never wait."""

    def __init__(
        self,
        transport: CallTransport,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._transport = transport
        self._clock = clock or MonotonicClock()
        self._sleep = sleep
        self._framer = Framer(ULAW_FRAME_BYTES)
        self._frames: asyncio.Queue[bytes] = asyncio.Queue()
        self._next_send: float | None = None
        self.frames_sent = 0
        self.marks_sent = 0
        self.marks_played: list[str] = []

    async def run(self, line: Line) -> None:
        """Serve until the caller hangs up; the pacer lives and dies inside this call."""
        queue: Inbox[LineEvent] = Inbox()
        queue.attach(line)
        pacer = asyncio.create_task(self._pace())
        try:
            while True:
                match await queue.get():
                    case CallerAudio(ulaw=ulaw):
                        for frame in self._framer.push(ulaw):
                            self._frames.put_nowait(frame)
                    case CallerDtmf(digit=digit):
                        await self._clear(digit)
                    case MarkPlayed(name=name):
                        self.marks_played.append(name)
                    case CallerHungUp():
                        return
        finally:
            pacer.cancel()
            await asyncio.wait({pacer})
            log_event(log, logging.INFO, "loopback.ended", frames=self.frames_sent)

    async def _clear(self, digit: str) -> None:
        """A key press drops what is queued here and what Twilio has buffered."""
        while not self._frames.empty():
            self._frames.get_nowait()
        await self._transport.send_clear()
        log_event(log, logging.INFO, "loopback.cleared", digit=digit)

    async def _pace(self) -> None:
        while True:
            frame = await self._frames.get()
            now = self._clock.now()
            if self._next_send is None or now - self._next_send > _MAX_LAG_S:
                self._next_send = now
            if (delay := self._next_send - now) > 0:
                await self._sleep(delay)
            await self._transport.send_audio(frame)
            self._next_send += _FRAME_S
            self.frames_sent += 1
            if self.frames_sent % FRAMES_PER_MARK == 0:
                self.marks_sent += 1
                await self._transport.send_mark(f"loopback-{self.marks_sent}")
