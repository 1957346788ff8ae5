"""The shell of a bridged call: one task reads one queue (line events from the socket
adapter, agent events from a pump task) and carries out ``BridgeCore``'s commands.

When the core asks for the apology (the agent was lost), the local fallback voice speaks
it into the same queue, so the caller hears it paced and marked like the agent's audio,
and the hang-up waits for its last mark.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from callbridge.clock import Clock, MonotonicClock
from callbridge.engine.bridge import (
    Apologise,
    ApologyAudio,
    ApologyDone,
    BridgeCommand,
    BridgeCore,
    BridgeEvent,
    BridgeOptions,
    EndRemote,
    ForwardAudio,
    RemoteAudio,
    RemoteFailed,
    RemoteSignalled,
)
from callbridge.engine.events import (
    CallEvent,
    Hangup,
    RecordEvent,
    SendAudio,
    SendClear,
    SendMark,
    Tick,
)
from callbridge.engine.transport import CallInfo, CallRunner, CallTransport, LineEvent
from callbridge.errors import CallbridgeError, ProviderError
from callbridge.providers.base import RemoteAgent, RemoteSession, TextToSpeech

__all__ = ["BridgeCall", "make_bridge_runner"]

log = logging.getLogger(__name__)


class BridgeCall:
    """One bridged call's owner task. ``apology_tts`` (the local voice, which needs no
    network) speaks ``apology_message`` when the agent is lost, so no caller is dropped
    in silence; ``on_event`` gets the call's record events."""

    def __init__(
        self,
        transport: CallTransport,
        agent: RemoteAgent,
        options: BridgeOptions | None = None,
        *,
        clock: Clock | None = None,
        apology_tts: TextToSpeech | None = None,
        apology_message: str | None = None,
        on_event: Callable[[CallEvent], None] | None = None,
    ) -> None:
        self.core = BridgeCore(options)
        self._transport = transport
        self._agent = agent
        self._clock = clock or MonotonicClock()
        self._apology_tts = apology_tts
        self._apology_message = apology_message
        self._on_event = on_event
        self._session: RemoteSession | None = None
        self._group: asyncio.TaskGroup | None = None
        self._inbox: asyncio.Queue[BridgeEvent] = asyncio.Queue()
        self._apology: asyncio.Task[None] | None = None

    async def run(self, line: asyncio.Queue[LineEvent]) -> None:
        """Serve the call until it ends; ``line`` is the socket adapter's queue."""
        # The line's queue is the inbox: one queue keeps the order things happened in.
        inbox = self._inbox = cast("asyncio.Queue[BridgeEvent]", line)
        try:
            self._session = await self._agent.open_session()
        except ProviderError as exc:
            log.error("bridge.agent_unreachable agent=%s error=%s", self._agent.name, exc)
            inbox.put_nowait(RemoteFailed(f"unreachable: {exc}", self._agent.name))
        async with asyncio.TaskGroup() as group:
            self._group = group
            pump = None
            if self._session is not None:
                pump = group.create_task(self._pump(self._session, inbox))
            try:
                await self._loop(inbox)
            finally:
                self._group = None
                for task in (pump, self._apology):
                    if task is not None:
                        task.cancel()
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
                case Apologise():
                    assert self._group is not None
                    self._apology = self._group.create_task(self._apologise(self._inbox))
                case RecordEvent(event=event):
                    if self._on_event is not None:
                        self._on_event(event)

    async def _pump(self, session: RemoteSession, inbox: asyncio.Queue[BridgeEvent]) -> None:
        try:
            async for item in session.events():
                inbox.put_nowait(
                    RemoteAudio(item) if isinstance(item, bytes) else RemoteSignalled(item)
                )
        except ProviderError as exc:
            inbox.put_nowait(RemoteFailed(str(exc), exc.provider))
            return
        inbox.put_nowait(RemoteSignalled("ended"))  # a stream that stops is a call that ended

    async def _apologise(self, inbox: asyncio.Queue[BridgeEvent]) -> None:
        """The apology in the local voice; whatever happens, ``ApologyDone`` follows, so
        the hang-up is never left waiting on it."""
        try:
            if self._apology_tts is not None and self._apology_message:
                async for chunk in self._apology_tts.synthesize(self._apology_message):
                    if chunk:
                        inbox.put_nowait(ApologyAudio(chunk))
        except CallbridgeError as exc:
            log.error("bridge.apology_failed error=%s", exc)
        except Exception:
            log.exception("bridge.apology_crashed")
        finally:
            inbox.put_nowait(ApologyDone())


def make_bridge_runner(
    agent: RemoteAgent,
    options: BridgeOptions | None = None,
    *,
    apology_tts: TextToSpeech | None = None,
    apology_message: str | None = None,
    clock: Clock | None = None,
    on_end: Callable[[CallInfo, BridgeCore], None] | None = None,
    on_event: Callable[[CallInfo, CallEvent], None] | None = None,
) -> CallRunner:
    """The ``CallRunner`` for ``engine: vapi`` (or any other ``RemoteAgent``); ``on_end``
    gets the call's core (its counters) once the call is over, ``on_event`` the call's
    record events (a lost agent, the hang-up)."""

    async def run(info: CallInfo, transport: CallTransport, line: asyncio.Queue[LineEvent]) -> None:
        def happened(event: CallEvent) -> None:
            if on_event is not None:
                on_event(info, event)

        call = BridgeCall(transport, agent, options, clock=clock, apology_tts=apology_tts,
                          apology_message=apology_message, on_event=happened)
        try:
            await call.run(line)
        finally:
            if on_end is not None:
                on_end(info, call.core)

    return run
