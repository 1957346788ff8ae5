"""``WS /media``: the thin adapter between Twilio's Media Streams socket and a CallRunner.

How it works: accept (unless too many sockets already wait for their ``start``); read
``connected``; require ``start`` with a valid stream token for its callSid and μ-law 8 kHz
mono, else close 1008 before any runner exists. The token must be unused and the call
must have no other live stream (1008 again: a replayed token would otherwise overwrite
the first stream's record and recording); at ``max_calls`` the caller hears the polite
refusal through REST and the socket closes 1013. Then two tasks: a reader that turns
frames into line events on the call's queue, within the socket's budgets
(``twilio/budget.py``), and the runner (the engine, or the loopback echo) that talks back
through a ``TwilioTransport``. A bad frame is counted and logged and never ends the call;
which frames count is the codec's business, what the runner does is the runner's. What
the call's record keeps (gaps, rejected frames, a stuck or failed runner) goes out typed
through the call's ``emit`` (``call_events.py``), which the transport and the runner
share; the log lines beside them are for people.

The one-stream-per-call set and the used tokens live in this process (``Edge``). With
several instances they belong in the shared store, or a replayed token could open a
second stream on another instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from callbridge.call_events import (
    BacklogFull,
    CallerPaced,
    Emit,
    FrameRejected,
    MediaGap,
    RunnerCancelled,
    RunnerFailed,
    StreamEnded,
    ignore,
)
from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallerHungUp,
    CallInfo,
    Line,
    MarkPlayed,
)
from callbridge.errors import CallbridgeError
from callbridge.server.edge import Edge
from callbridge.telemetry.logging import bind_call, log_event
from callbridge.twilio import codec, twiml
from callbridge.twilio.budget import DTMF_BURST, DTMF_PER_S, AudioPacer, TokenBucket
from callbridge.twilio.gaps import GapDetector
from callbridge.twilio.tokens import StreamTokenError, TokenClaims
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
TRY_AGAIN_LATER = 1013
_LOG_FIRST = 5

router = APIRouter()


@router.websocket("/media")
async def media_stream(websocket: WebSocket) -> None:
    edge: Edge = websocket.app.state.edge
    if edge.unstarted >= edge.max_unstarted:
        edge.stats.streams_rejected += 1
        log_event(
            log,
            logging.WARNING,
            "stream.rejected",
            reason="too many sockets without 'start'",
            unstarted=edge.unstarted,
        )
        await websocket.close(code=TRY_AGAIN_LATER)  # before accept: HTTP 403
        return
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
    stream = _Stream(edge, websocket)
    edge.unstarted += 1
    try:
        await websocket.accept()
        start = await stream.authenticate()
    finally:
        edge.unstarted -= 1
    if start is not None:
        await stream.run(start)


class _Disconnected(Exception):
    """The far end closed the socket."""


class _Stream:
    """One socket's life. Only its own tasks touch it."""

    def __init__(self, edge: Edge, websocket: WebSocket) -> None:
        self.edge = edge
        self.ws = websocket
        self.rejected: Counter[str] = Counter()
        self.gaps = GapDetector(now=edge.clock)
        self.dropped_backlog = 0
        self.paced_s = 0.0
        self.runner_failed = False
        self.emit: Emit = ignore  # the call's, once it has started

    async def authenticate(self) -> codec.Start | None:
        """The admitted ``start``; None when the socket was refused or ended first."""
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                start = await self._await_start()
        except TimeoutError:
            await self._reject(f"expected 'start' within {START_TIMEOUT_S:g} s, got nothing")
            return None
        except _Disconnected:
            return None
        if start is None:
            return None
        bind_call(start.call_sid, start.stream_sid)
        limit = self.edge.settings.max_calls
        if limit and self.edge.stats.active_calls >= limit:
            await self._overflow(start.call_sid)
            return None
        return start

    async def run(self, start: codec.Start) -> None:
        stats = self.edge.stats
        stats.active_calls += 1
        stats.calls_total += 1
        self.emit = self.edge.events.emitter(start.call_sid)
        log_event(log, logging.INFO, "stream.started", tracks=",".join(start.tracks))
        try:
            await self._serve(start)
        finally:
            self.edge.live_calls.discard(start.call_sid)
            stats.active_calls -= 1
            stats.timestamp_gaps += self.gaps.timestamp_gaps
            stats.arrival_gaps += self.gaps.arrival_gaps
            ended = StreamEnded(
                gaps=self.gaps.summary(),
                rejected=dict(self.rejected),
                dropped_backlog=self.dropped_backlog,
                paced_s=round(self.paced_s, 2),
            )
            log_event(log, logging.INFO, "stream.ended", **ended.data)
            self.emit(ended)

    async def _await_start(self) -> codec.Start | None:
        """Read until a valid ``start``; None when the socket was refused or ended."""
        while True:
            match self._decode(await self._receive()):
                case codec.Start() as start:
                    checked = self._check_start(start)
                    problem = checked if isinstance(checked, str) else self._admit(start, checked)
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

    def _check_start(self, start: codec.Start) -> TokenClaims | str:
        """The token's claims if ``start`` is well-formed and signed, else the problem."""
        token = start.custom_parameters.get("token")
        if not token:
            return "start carries no stream token"
        try:
            claims = self.edge.tokens.verify(token, start.call_sid)
        except StreamTokenError as exc:
            return str(exc)
        fmt = start.media_format
        if (fmt.encoding, fmt.sample_rate_hz, fmt.channels) != ("audio/x-mulaw", 8000, 1):
            return (
                "expected mediaFormat audio/x-mulaw 8000 Hz mono, got "
                f"{fmt.encoding} {fmt.sample_rate_hz} Hz {fmt.channels} ch"
            )
        return claims

    def _admit(self, start: codec.Start, claims: TokenClaims) -> str | None:
        """One live stream per call, one stream per token; None when admitted."""
        if start.call_sid in self.edge.live_calls:
            return "a stream for this call is already live"
        problem = self.edge.spent_tokens.spend(claims)
        if problem is None:
            self.edge.live_calls.add(start.call_sid)  # no await since the check: no race
        return problem

    async def _overflow(self, call_sid: str) -> None:
        """At capacity: the caller hears the polite refusal (REST), then the socket closes.

        ``/voice`` refuses at capacity too, but many calls answered at once all pass it
        before any of their streams has started; this is the check that holds.
        """
        self.edge.live_calls.discard(call_sid)
        self.edge.stats.overflow_total += 1
        log_event(log, logging.WARNING, "stream.overflow", active=self.edge.stats.active_calls)
        if self.edge.rest is not None:
            try:
                await self.edge.rest.transfer_call(call_sid, twiml.refuse())
            except CallbridgeError:
                log.exception("stream.overflow_refusal_failed")
        await self._close(TRY_AGAIN_LATER, "at capacity")

    async def _serve(self, start: codec.Start) -> None:
        params = {k: v for k, v in start.custom_parameters.items() if k != "token"}
        info = CallInfo(
            call_sid=start.call_sid,
            stream_sid=start.stream_sid,
            from_number=params.get("from", ""),
            to_number=params.get("to", ""),
            parameters=params,
            emit=self.emit,
        )
        queue = Line()
        transport = TwilioTransport(
            stream_sid=start.stream_sid,
            call_sid=start.call_sid,
            send_text=self._send_text,
            close=self._close,
            rest=self.edge.rest,
            emit=self.emit,
        )
        runner = asyncio.create_task(self._run_runner(info, transport, queue))
        reader = asyncio.create_task(self._read(queue, transport))
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
                    self.emit(RunnerCancelled(HANGUP_GRACE_S))
        finally:
            for task in (runner, reader):
                task.cancel()
            await asyncio.wait({runner, reader})
            self.edge.live.remove(live)
            if self.runner_failed:
                await self._close(INTERNAL_ERROR, "internal error")
            await transport.close()

    async def _run_runner(
        self, info: CallInfo, transport: TwilioTransport, queue: Line
    ) -> None:
        try:
            await self.edge.runner(info, transport, queue)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the runner's bug must end this call only, with a traceback
            self.runner_failed = True
            log.exception("stream.runner_failed")
            self.emit(RunnerFailed(repr(exc)))

    async def _read(self, queue: Line, transport: TwilioTransport) -> None:
        clock = self.edge.clock
        dtmf = TokenBucket(DTMF_PER_S, DTMF_BURST)
        pacer = AudioPacer()
        pacer.begin(clock())
        while True:
            try:
                text = await self._receive()
            except _Disconnected:
                queue.put_nowait(CallerHungUp("disconnect"))
                return
            match self._decode(text):
                case codec.Media(ulaw=ulaw, timestamp_ms=ts):
                    wait_s = pacer.wait_s(len(ulaw), clock())
                    if wait_s > 0:
                        await self._pace(wait_s)
                    for gap in self.gaps.observe(ts):
                        log_event(
                            log,
                            logging.INFO,
                            "media.gap",
                            kind=gap.kind,
                            gap_ms=round(gap.gap_ms),
                            coalesced=gap.coalesced,
                        )
                        self.emit(MediaGap(gap.kind, round(gap.gap_ms), gap.coalesced))
                    if queue.qsize() >= MAX_QUEUED_EVENTS:
                        self.dropped_backlog += 1
                        if self.dropped_backlog == 1:
                            log_event(log, logging.WARNING, "stream.backlog", queued=queue.qsize())
                            self.emit(BacklogFull(queue.qsize()))
                        continue
                    queue.put_nowait(CallerAudio(ulaw, ts))
                case codec.Dtmf(digit=digit):
                    if dtmf.take(clock()):
                        queue.put_nowait(CallerDtmf(digit))
                    else:
                        self._count("dtmf_rate", f"over {DTMF_PER_S:g} key presses a second")
                case codec.Mark(name=name):
                    if transport.marks.echoed(name):
                        queue.put_nowait(MarkPlayed(name))
                    else:
                        self._count("mark_unsent", "an echo of no mark we sent (or a second one)")
                case codec.Stop():
                    queue.put_nowait(CallerHungUp("stop"))
                    return
                case codec.Start():
                    self._count("order", "a second 'start'; ignored")
                case _:
                    pass

    async def _pace(self, wait_s: float) -> None:
        """The caller's audio is ahead of real time: hold the reader (TCP pushes back)."""
        if self.paced_s == 0.0:
            log_event(log, logging.WARNING, "stream.paced", ahead_s=round(wait_s, 2))
            self.emit(CallerPaced(round(wait_s, 2)))
        self.paced_s += wait_s
        await self.edge.sleep(wait_s)

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
        """Count a rejected frame; log and record the first few of each kind, then every
        100th."""
        self.rejected[kind] += 1
        self.edge.stats.frames_rejected[kind] += 1
        n = self.rejected[kind]
        if n <= _LOG_FIRST or n % 100 == 0:
            log_event(log, logging.WARNING, "stream.bad_frame", kind=kind, count=n, detail=detail)
            self.emit(FrameRejected(kind, n, detail))

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
