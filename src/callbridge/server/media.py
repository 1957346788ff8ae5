"""``WS /media``: the thin adapter between Twilio's Media Streams socket and a CallRunner.

How it works: accept; read ``connected``; require ``start`` with a valid stream token for
its callSid and μ-law 8 kHz mono, else close 1008 before any runner exists. Then two
tasks: a reader that turns frames into line events on the call's queue, and the runner
(the engine, or the loopback echo) that talks back through a ``TwilioTransport``. A bad
frame is counted and logged and never ends the call; which frames count is the codec's
business, what the runner does is the runner's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallerHungUp,
    CallInfo,
    LineEvent,
    MarkPlayed,
)
from callbridge.server.edge import Edge
from callbridge.telemetry.logging import bind_call, log_event
from callbridge.twilio import codec
from callbridge.twilio.gaps import GapDetector
from callbridge.twilio.tokens import StreamTokenError
from callbridge.twilio.transport import LineClosed, TwilioTransport

__all__ = ["HANGUP_GRACE_S", "MAX_QUEUED_EVENTS", "START_TIMEOUT_S", "router"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
"""Twilio sends ``start`` right after ``connected``; a socket that does not is not Twilio."""
HANGUP_GRACE_S = 5.0
"""How long a runner may take to wind down after the caller left, before it is cancelled."""
MAX_QUEUED_EVENTS = 1000
"""20 s of audio. A runner this far behind is stuck; newer audio is dropped and counted."""
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
_LOG_FIRST = 5

router = APIRouter()


@router.websocket("/media")
async def media_stream(websocket: WebSocket) -> None:
    edge: Edge = websocket.app.state.edge
    if edge.validator is None:
        edge.warn_insecure("/media")
    else:
        signature = websocket.headers.get("x-twilio-signature")
        if signature is not None:
            verdict = edge.validator.check_handshake(
                edge.url_of(websocket, websocket=True), signature
            )
            if not verdict.ok:
                edge.stats.streams_rejected += 1
                log_event(log, logging.WARNING, "stream.rejected", reason=verdict.reason)
                await websocket.close(code=POLICY_VIOLATION)  # before accept: HTTP 403
                return
    await websocket.accept()
    await _Stream(edge, websocket).run()


class _Disconnected(Exception):
    """The far end closed the socket."""


class _Stream:
    """One socket's life. Only its own tasks touch it."""

    def __init__(self, edge: Edge, websocket: WebSocket) -> None:
        self.edge = edge
        self.ws = websocket
        self.rejected: Counter[str] = Counter()
        self.gaps = GapDetector()
        self.dropped_backlog = 0
        self.runner_failed = False

    async def run(self) -> None:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                start = await self._await_start()
        except TimeoutError:
            await self._reject(f"expected 'start' within {START_TIMEOUT_S:g} s, got nothing")
            return
        except _Disconnected:
            return
        if start is None:
            return
        bind_call(start.call_sid, start.stream_sid)
        stats = self.edge.stats
        stats.active_calls += 1
        stats.calls_total += 1
        log_event(log, logging.INFO, "stream.started", tracks=",".join(start.tracks))
        try:
            await self._serve(start)
        finally:
            stats.active_calls -= 1
            stats.timestamp_gaps += self.gaps.timestamp_gaps
            stats.arrival_gaps += self.gaps.arrival_gaps
            log_event(
                log,
                logging.INFO,
                "stream.ended",
                **self.gaps.summary(),
                rejected=dict(self.rejected),
                dropped_backlog=self.dropped_backlog,
            )

    async def _await_start(self) -> codec.Start | None:
        """Read until a valid ``start``; None when the socket was refused or ended."""
        while True:
            match self._decode(await self._receive()):
                case codec.Start() as start:
                    problem = self._check_start(start)
                    if problem is None:
                        return start
                    await self._reject(problem)
                    return None
                case codec.Media():
                    await self._reject("expected 'start' before 'media', got 'media'")
                    return None
                case codec.Stop():
                    await self._close()
                    return None
                case codec.Mark() | codec.Dtmf():
                    self._count("order", "expected 'start' first; ignored")
                case _:
                    pass  # connected, or a frame already counted

    def _check_start(self, start: codec.Start) -> str | None:
        token = start.custom_parameters.get("token")
        if not token:
            return "start carries no stream token"
        try:
            self.edge.tokens.verify(token, start.call_sid)
        except StreamTokenError as exc:
            return str(exc)
        fmt = start.media_format
        if (fmt.encoding, fmt.sample_rate_hz, fmt.channels) != ("audio/x-mulaw", 8000, 1):
            return (
                "expected mediaFormat audio/x-mulaw 8000 Hz mono, got "
                f"{fmt.encoding} {fmt.sample_rate_hz} Hz {fmt.channels} ch"
            )
        return None

    async def _serve(self, start: codec.Start) -> None:
        params = {k: v for k, v in start.custom_parameters.items() if k != "token"}
        info = CallInfo(
            call_sid=start.call_sid,
            stream_sid=start.stream_sid,
            from_number=params.get("from", ""),
            to_number=params.get("to", ""),
            parameters=params,
        )
        queue: asyncio.Queue[LineEvent] = asyncio.Queue()
        transport = TwilioTransport(
            stream_sid=start.stream_sid,
            call_sid=start.call_sid,
            send_text=self._send_text,
            close=self._close,
            rest=self.edge.rest,
        )
        runner = asyncio.create_task(self._run_runner(info, transport, queue))
        reader = asyncio.create_task(self._read(queue))
        # Registered while it runs: a drain or the API (of any instance) can end it.
        live = self.edge.live.add(start.call_sid, queue.put_nowait, transport.hangup)
        try:
            await asyncio.wait({runner, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not runner.done():
                # The caller left; CallerHungUp is queued. Let the runner finish its record.
                await asyncio.wait({runner}, timeout=HANGUP_GRACE_S)
                if not runner.done():
                    log_event(
                        log, logging.WARNING, "stream.runner_cancelled", grace_s=HANGUP_GRACE_S
                    )
        finally:
            for task in (runner, reader):
                task.cancel()
            await asyncio.wait({runner, reader})
            self.edge.live.remove(live)
            if self.runner_failed:
                await self._close(INTERNAL_ERROR, "internal error")
            await transport.close()

    async def _run_runner(
        self, info: CallInfo, transport: TwilioTransport, queue: asyncio.Queue[LineEvent]
    ) -> None:
        try:
            await self.edge.runner(info, transport, queue)
        except asyncio.CancelledError:
            raise
        except Exception:  # the runner's bug must end this call only, with a traceback
            self.runner_failed = True
            log.exception("stream.runner_failed")

    async def _read(self, queue: asyncio.Queue[LineEvent]) -> None:
        while True:
            try:
                text = await self._receive()
            except _Disconnected:
                queue.put_nowait(CallerHungUp("disconnect"))
                return
            match self._decode(text):
                case codec.Media(ulaw=ulaw, timestamp_ms=ts):
                    for gap in self.gaps.observe(ts):
                        log_event(
                            log, logging.INFO, "media.gap", kind=gap.kind, gap_ms=round(gap.gap_ms)
                        )
                    if queue.qsize() >= MAX_QUEUED_EVENTS:
                        self.dropped_backlog += 1
                        if self.dropped_backlog == 1:
                            log_event(log, logging.WARNING, "stream.backlog", queued=queue.qsize())
                        continue
                    queue.put_nowait(CallerAudio(ulaw, ts))
                case codec.Dtmf(digit=digit):
                    queue.put_nowait(CallerDtmf(digit))
                case codec.Mark(name=name):
                    queue.put_nowait(MarkPlayed(name))
                case codec.Stop():
                    queue.put_nowait(CallerHungUp("stop"))
                    return
                case codec.Start():
                    self._count("order", "a second 'start'; ignored")
                case _:
                    pass

    async def _receive(self) -> str | None:
        """The next text frame; None for a binary one (counted). Raises _Disconnected."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise _Disconnected
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            self._count("binary", f"expected a text frame, got {len(data)} binary bytes")
            return None
        assert isinstance(text, str)
        return text

    def _decode(self, text: str | None) -> codec.Inbound | None:
        if text is None:
            return None
        try:
            event = codec.decode(text)
        except codec.MalformedFrame as exc:
            self._count(exc.kind, str(exc))
            return None
        if isinstance(event, codec.Unknown):
            self._count("unknown", f"unknown event {event.event!r}")
            return None
        return event

    def _count(self, kind: str, detail: str) -> None:
        """Count a rejected frame; log the first few of each kind and then every 100th."""
        self.rejected[kind] += 1
        self.edge.stats.frames_rejected[kind] += 1
        n = self.rejected[kind]
        if n <= _LOG_FIRST or n % 100 == 0:
            log_event(log, logging.WARNING, "stream.bad_frame", kind=kind, count=n, detail=detail)

    async def _reject(self, reason: str) -> None:
        self.edge.stats.streams_rejected += 1
        log_event(log, logging.WARNING, "stream.rejected", reason=reason)
        await self._close(POLICY_VIOLATION, reason[:120])

    async def _send_text(self, text: str) -> None:
        if self.ws.application_state != WebSocketState.CONNECTED:
            raise LineClosed("socket closed")
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise LineClosed(str(exc)) from exc

    async def _close(self, code: int = 1000, reason: str = "") -> None:
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        try:
            await self.ws.close(code=code, reason=reason)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.debug("stream.close_failed %s", exc)  # the peer left first: nothing to close
