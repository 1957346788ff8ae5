"""Bridge mode: a remote voice agent (VAPI) serves the call instead of our pipeline.

How it works: the caller's frames go to the agent as they arrive; the agent's audio comes
back in chunks of any size and is paced to the line by the same ``Playout`` the pipeline
uses (20 ms frames, bounded lead, a mark after each stretch of speech). ``BridgeCore``
holds every rule and does no I/O: it takes events with the time and returns commands, so
a manual clock tests it. ``BridgeCall`` is the shell: one task reads one queue (line
events from the socket adapter, agent events from a pump task) and carries out commands.

Barge-in happens in one place (``BridgeCore._barge_in``): ``clear`` to the line, drop the
queued playout, and hold back agent audio that was already on its way (until the agent
says it starts speaking again, or ``stale_guard_ms`` passes). When the agent ends the call
the line is hung up after the last mark comes back (so the goodbye is heard), or after
``hangup_mark_timeout_s``; when the caller hangs up the agent's call is ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import cast

from callbridge.engine.clock import Clock, MonotonicClock
from callbridge.engine.events import Hangup, SendAudio, SendClear, SendMark, Tick
from callbridge.engine.playout import Playout, SegmentKey
from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallerHungUp,
    CallInfo,
    CallRunner,
    CallTransport,
    LineEvent,
    MarkPlayed,
)
from callbridge.errors import ProviderError
from callbridge.providers.base import (
    RemoteAgent,
    RemoteSession,
    RemoteSignal,
    TextToSpeech,
)

__all__ = [
    "BridgeCall",
    "BridgeCore",
    "BridgeOptions",
    "EndRemote",
    "ForwardAudio",
    "RemoteAudio",
    "RemoteFailed",
    "RemoteSignalled",
    "make_bridge_runner",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- events and commands


@dataclass(frozen=True, slots=True)
class RemoteAudio:
    ulaw: bytes


@dataclass(frozen=True, slots=True)
class RemoteSignalled:
    signal: RemoteSignal


@dataclass(frozen=True, slots=True)
class RemoteFailed:
    error: str


@dataclass(frozen=True, slots=True)
class ForwardAudio:
    """Send a caller frame to the agent."""

    ulaw: bytes


@dataclass(frozen=True, slots=True)
class EndRemote:
    """End the agent's call (the caller left)."""

    reason: str


BridgeEvent = LineEvent | RemoteAudio | RemoteSignalled | RemoteFailed | Tick
BridgeCommand = SendAudio | SendMark | SendClear | Hangup | ForwardAudio | EndRemote


@dataclass(frozen=True, slots=True)
class BridgeOptions:
    send_ahead_ms: int = 200
    playout_max_s: float = 120.0
    hangup_mark_timeout_s: float = 10.0
    clear_on_user_speech: bool = True
    """Caller speech over the bot clears at once, before the agent's own verdict."""
    stale_guard_ms: int = 300
    """After a clear, agent audio is dropped this long unless it says it speaks anew."""
    segment_idle_ms: int = 200
    """A gap in the agent's audio this long closes the stretch of speech with a mark."""


class _Phase(Enum):
    ACTIVE = "active"
    DRAINING = "draining"  # the agent ended; the line plays out what it has
    ENDED = "ended"


class BridgeCore:
    """The rules of one bridged call, without I/O: ``handle`` events, ``take_commands``."""

    def __init__(self, options: BridgeOptions | None = None) -> None:
        self.options = options = options or BridgeOptions()
        self.playout = Playout(
            send_ahead_ms=options.send_ahead_ms, max_queued_s=options.playout_max_s
        )
        self.phase = _Phase.ACTIVE
        self.end_reason = ""
        self.clears = 0
        self.stale_dropped_bytes = 0
        self._out: list[BridgeCommand] = []
        self._segment: SegmentKey | None = None
        self._segments = 0
        self._last_audio = 0.0
        self._guard_until: float | None = None
        self._drain_deadline: float | None = None

    @property
    def ended(self) -> bool:
        return self.phase is _Phase.ENDED

    @property
    def bot_speaking(self) -> bool:
        """Agent audio queued here, or sent and not yet confirmed played by the line."""
        return self.playout.busy()

    def take_commands(self) -> list[BridgeCommand]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        """When ``handle(Tick())`` has something to do (None: only events matter)."""
        if self.ended:
            return None
        times = [self.playout.next_deadline(), self._drain_deadline]
        if self._segment is not None:
            times.append(self._last_audio + self.options.segment_idle_ms / 1000)
        return min((t for t in times if t is not None), default=None)

    def handle(self, event: BridgeEvent, now: float) -> None:
        if self.ended:
            return
        match event:
            case CallerAudio(ulaw=data):
                if self.phase is _Phase.ACTIVE:
                    self._out.append(ForwardAudio(data))
            case MarkPlayed(name=name):
                self.playout.mark_played(name, now)
                if self._segment is None and not self.playout.busy():
                    self.playout.finish_utterance()
            case CallerHungUp(reason=reason):
                self._finish(EndRemote(f"caller {reason}"))
                return
            case RemoteAudio(ulaw=data):
                self._remote_audio(data, now)
            case RemoteSignalled(signal=signal):
                self._signal(signal, now)
            case RemoteFailed(error=error):
                self._drain(f"agent failed: {error}", now)
            case CallerDtmf() | Tick():
                pass  # the agent's socket carries no keypad; ticks only advance time
        self._advance(now)

    # ------------------------------------------------------------ rules

    def _remote_audio(self, data: bytes, now: float) -> None:
        if self._guard_until is not None:
            if now < self._guard_until:
                self.stale_dropped_bytes += len(data)
                return
            self._guard_until = None
        if self._segment is None:
            self._segments += 1
            self._segment = (self._segments, 0)
            self.playout.begin_segment(self._segment, "")
        self.playout.add_audio(self._segment, data)
        self._last_audio = now

    def _signal(self, signal: RemoteSignal, now: float) -> None:
        match signal:
            case "interrupted":
                self._barge_in(now)
            case "user-started":
                if self.options.clear_on_user_speech and self.bot_speaking:
                    self._barge_in(now)
            case "bot-started":
                self._guard_until = None  # what follows is new speech, not stale audio
            case "bot-stopped":
                self._close_segment()
            case "ended":
                self._drain("agent ended the call", now)

    def _barge_in(self, now: float) -> None:
        """The one place a barge-in happens. Repeats (``user-started`` then
        ``interrupted``) find nothing left to clear and send nothing."""
        self._guard_until = now + self.options.stale_guard_ms / 1000
        if not self.playout.busy():
            return
        self._out.append(SendClear())
        self.playout.clear(now)
        self._segment = None
        self.clears += 1

    def _drain(self, reason: str, now: float) -> None:
        if self.phase is not _Phase.ACTIVE:
            return
        self.end_reason = reason
        self._close_segment()
        self.phase = _Phase.DRAINING
        self._drain_deadline = now + self.options.hangup_mark_timeout_s

    def _close_segment(self) -> None:
        if self._segment is not None:
            self.playout.end_segment(self._segment)
            self._segment = None

    def _advance(self, now: float) -> None:
        idle_s = self.options.segment_idle_ms / 1000
        if self._segment is not None and now - self._last_audio >= idle_s - 1e-9:
            self._close_segment()
        for command in self.playout.pull(now):
            assert isinstance(command, SendAudio | SendMark)  # all the pacer ever asks
            self._out.append(command)
        if self.phase is _Phase.DRAINING:
            if not self.playout.busy():
                self._finish(Hangup(self.end_reason))
            elif self._drain_deadline is not None and now >= self._drain_deadline:
                log.warning("bridge.hangup_mark_timeout")
                self._finish(Hangup(f"{self.end_reason} (marks timed out)"))

    def _finish(self, command: BridgeCommand) -> None:
        self._out.append(command)
        self.phase = _Phase.ENDED


# ---------------------------------------------------------------- the shell


class BridgeCall:
    """One bridged call's owner task. ``apology_tts`` speaks ``apology_message`` when the
    agent cannot be reached at all, so the caller is not left in silence."""

    def __init__(
        self,
        transport: CallTransport,
        agent: RemoteAgent,
        options: BridgeOptions | None = None,
        *,
        clock: Clock | None = None,
        apology_tts: TextToSpeech | None = None,
        apology_message: str | None = None,
    ) -> None:
        self.core = BridgeCore(options)
        self._transport = transport
        self._agent = agent
        self._clock = clock or MonotonicClock()
        self._apology_tts = apology_tts
        self._apology_message = apology_message
        self._session: RemoteSession | None = None

    async def run(self, line: asyncio.Queue[LineEvent]) -> None:
        """Serve the call until it ends; ``line`` is the socket adapter's queue."""
        # The line's queue is the inbox: one queue keeps the order things happened in.
        inbox = cast("asyncio.Queue[BridgeEvent]", line)
        try:
            self._session = await self._agent.open_session()
        except ProviderError as exc:
            log.error("bridge.agent_unreachable agent=%s error=%s", self._agent.name, exc)
        async with asyncio.TaskGroup() as group:
            if self._session is not None:
                feeder = group.create_task(self._pump(self._session, inbox))
            else:
                feeder = group.create_task(self._apologise(inbox))
            try:
                await self._loop(inbox)
            finally:
                feeder.cancel()
                if self._session is not None:
                    await self._session.aclose()
        log.info(
            "bridge.ended reason=%s clears=%d stale_dropped_bytes=%d frames_sent=%d",
            self.core.end_reason or "caller",
            self.core.clears,
            self.core.stale_dropped_bytes,
            self.core.playout.sent_frames,
        )

    async def _loop(self, inbox: asyncio.Queue[BridgeEvent]) -> None:
        core, clock = self.core, self._clock
        while not core.ended:
            event: BridgeEvent
            if not inbox.empty():
                event = inbox.get_nowait()
            else:
                deadline = core.next_deadline()
                delay = None if deadline is None else deadline - clock.now()
                if delay is not None and delay <= 0:
                    event = Tick()
                else:
                    try:
                        async with asyncio.timeout(delay):
                            event = await inbox.get()
                    except TimeoutError:
                        event = Tick()
            core.handle(event, clock.now())
            await self._execute(core.take_commands())

    async def _execute(self, commands: list[BridgeCommand]) -> None:
        transport, session = self._transport, self._session
        for command in commands:
            match command:
                case ForwardAudio(ulaw=data):
                    if session is not None:
                        session.push_audio(data)
                case SendAudio(ulaw=data):
                    await transport.send_audio(data)
                case SendMark(name=name):
                    await transport.send_mark(name)
                case SendClear():
                    await transport.send_clear()
                case Hangup(reason=reason):
                    log.info("bridge.hangup reason=%s", reason)
                    await transport.hangup()
                case EndRemote(reason=reason):
                    log.info("bridge.end_agent_call reason=%s", reason)
                    if session is not None:
                        await session.hangup()

    async def _pump(self, session: RemoteSession, inbox: asyncio.Queue[BridgeEvent]) -> None:
        try:
            async for item in session.events():
                inbox.put_nowait(
                    RemoteAudio(item) if isinstance(item, bytes) else RemoteSignalled(item)
                )
        except ProviderError as exc:
            inbox.put_nowait(RemoteFailed(str(exc)))
            return
        inbox.put_nowait(RemoteSignalled("ended"))  # a stream that stops is a call that ended

    async def _apologise(self, inbox: asyncio.Queue[BridgeEvent]) -> None:
        if self._apology_tts is not None and self._apology_message:
            try:
                async for chunk in self._apology_tts.synthesize(self._apology_message):
                    inbox.put_nowait(RemoteAudio(chunk))
            except ProviderError as exc:
                log.error("bridge.apology_failed error=%s", exc)
        inbox.put_nowait(RemoteFailed(f"{self._agent.name} unreachable"))


def make_bridge_runner(
    agent: RemoteAgent,
    options: BridgeOptions | None = None,
    *,
    apology_tts: TextToSpeech | None = None,
    apology_message: str | None = None,
    clock: Clock | None = None,
    on_end: Callable[[CallInfo, BridgeCore], None] | None = None,
) -> CallRunner:
    """The ``CallRunner`` for ``engine: vapi`` (or any other ``RemoteAgent``); ``on_end``
    gets the call's core (its counters) once the call is over."""

    async def run(info: CallInfo, transport: CallTransport, line: asyncio.Queue[LineEvent]) -> None:
        call = BridgeCall(transport, agent, options, clock=clock, apology_tts=apology_tts,
                          apology_message=apology_message)
        try:
            await call.run(line)
        finally:
            if on_end is not None:
                on_end(info, call.core)

    return run
