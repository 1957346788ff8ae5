"""The shell of a bridged call: the engine's one ``Shell`` (``shell.py``) reads one inbox
(line events from the socket adapter, agent events from a pump task) and carries out
``BridgeCore``'s commands.

When the core asks for the apology (the agent was lost), the local fallback voice speaks
it into the same queue, so the caller hears it paced and marked like the agent's audio,
and the hang-up waits for its last mark.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

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
)
from callbridge.engine.shell import Shell
from callbridge.engine.transport import CallInfo, CallRunner, CallTransport, Line
from callbridge.errors import CallbridgeError, ProviderError
from callbridge.providers.base import RemoteAgent, RemoteSession, TextToSpeech
from callbridge.providers.retry import record_retries

__all__ = ["BridgeCall", "make_bridge_runner"]

log = logging.getLogger(__name__)


class BridgeCall:
    """One bridged call's owner task, on the same ``Shell`` as the pipeline's session.
    ``apology_tts`` (the local voice, which needs no network) speaks ``apology_message``
    when the agent is lost, so no caller is dropped in silence; ``on_event`` gets the
    call's record events."""

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
        self._shell: Shell[BridgeEvent] = Shell(
            transport, clock or MonotonicClock(), on_event=on_event
        )
        self._agent = agent
        # The agent's retries reach the call's record through the same emit.
        self._on_retry = record_retries(on_event) if on_event is not None else None
        self._apology_tts = apology_tts
        self._apology_message = apology_message
        self._session: RemoteSession | None = None

    async def run(self, line: Line) -> None:
        """Serve the call until it ends; ``line`` is the socket adapter's side of it."""
        shell = self._shell
        try:
            self._session = await self._agent.open_session(on_retry=self._on_retry)
        except ProviderError as exc:
            log.error("bridge.agent_unreachable agent=%s error=%s", self._agent.name, exc)
            shell.post(RemoteFailed(f"unreachable: {exc}", self._agent.name))
        async with shell.owning(line):
            if self._session is not None:
                shell.spawn(self._pump(self._session))
            try:
                await shell.loop(self.core, self._execute, hears=False)
            finally:
                shell.cancel_tasks()
                if self._session is not None:
                    await self._session.aclose()
        log.info(
            "bridge.ended reason=%s clears=%d stale_dropped_bytes=%d frames_sent=%d",
            self.core.end_reason or "caller",
            self.core.clears,
            self.core.stale_dropped_bytes,
            self.core.playout.sent_frames,
        )

    async def _execute(self, commands: list[BridgeCommand]) -> None:
        shell, session = self._shell, self._session
        for command in commands:
            match command:
                case ForwardAudio(ulaw=data):
                    if session is not None:
                        session.push_audio(data)
                case SendAudio() | SendMark() | SendClear() | Hangup() | RecordEvent():
                    await shell.send(command)
                case EndRemote(reason=reason):
                    log.info("bridge.end_agent_call reason=%s", reason)
                    if session is not None:
                        await session.hangup()
                case Apologise():
                    shell.spawn(self._apologise())

    async def _pump(self, session: RemoteSession) -> None:
        inbox = self._shell.inbox
        try:
            async for item in session.events():
                inbox.put_nowait(
                    RemoteAudio(item) if isinstance(item, bytes) else RemoteSignalled(item)
                )
        except ProviderError as exc:
            inbox.put_nowait(RemoteFailed(str(exc), exc.provider))
            return
        inbox.put_nowait(RemoteSignalled("ended"))  # a stream that stops is a call that ended

    async def _apologise(self) -> None:
        """The apology in the local voice; whatever happens, ``ApologyDone`` follows, so
        the hang-up is never left waiting on it."""
        inbox = self._shell.inbox
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
) -> CallRunner:
    """The ``CallRunner`` for ``engine: vapi`` (or any other ``RemoteAgent``); ``on_end``
    gets the call's core (its counters) once the call is over; the call's record events
    (a lost agent, the hang-up) go to the call's own ``info.emit``."""

    async def run(info: CallInfo, transport: CallTransport, line: Line) -> None:
        call = BridgeCall(transport, agent, options, clock=clock, apology_tts=apology_tts,
                          apology_message=apology_message, on_event=info.emit)
        try:
            await call.run(line)
        finally:
            if on_end is not None:
                on_end(info, call.core)

    return run
