"""``WS /media``: one Media Streams socket's life, between the bytes and a CallRunner.

``server/media_socket.py`` owns the bytes (WebSocket framing, outside ASGI) and calls
``MediaStream`` per message, so a frame costs no task switch or queue hop before it is a
line event. Until ``start`` the stream only waits for it: ``server/media_admission.py``
checks it (1008 if refused; at ``max_calls`` the polite refusal and 1013). Then each frame
becomes a line event on the call's ``Line`` within the socket's budgets
(``twilio/budget.py``), and the runner (the engine, or the loopback echo) talks back
through a ``TwilioTransport``. Which frames count is ``media_frames.py``'s business (a bad
one never ends the call); what the call's record keeps goes out typed through the call's
``emit`` (``call_events.py``), shared with the transport and the runner.

The one-stream-per-call set and the used tokens live in this process (``Edge``); with
several instances they belong in the shared store.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from callbridge.call_events import (
    BacklogFull,
    CallerPaced,
    Emit,
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
from callbridge.server.edge import Edge
from callbridge.server.media_admission import admit, check_start, refuse_at_capacity
from callbridge.server.media_frames import FrameCheck
from callbridge.telemetry.logging import bind_call, log_event
from callbridge.twilio import codec
from callbridge.twilio.budget import DTMF_BURST, DTMF_PER_S, AudioPacer, TokenBucket
from callbridge.twilio.gaps import Gap, GapDetector
from callbridge.twilio.transport import TwilioTransport

__all__ = [
    "HANGUP_GRACE_S",
    "MAX_QUEUED_EVENTS",
    "START_TIMEOUT_S",
    "MediaStream",
    "StreamSocket",
]

log = logging.getLogger(__name__)

_media_audio = codec.media_audio
_new = tuple.__new__

START_TIMEOUT_S = 10.0
"""Twilio sends ``start`` right after ``connected``; a socket that does not is not Twilio."""
HANGUP_GRACE_S = 5.0
"""How long a runner may take to wind down after the caller left, before it is cancelled."""
MAX_QUEUED_EVENTS = 1000
"""20 s of the caller's audio. A runner this far behind is stuck; newer audio is dropped
and counted. Only ``CallerAudio`` counts: the engine posts its own events (TTS audio,
transcripts) into the same queue, and those must not push the caller out."""
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013


class StreamSocket(Protocol):
    """What the stream needs of its socket (``media_socket.MediaSocket``, or a double)."""

    async def send_text(self, text: str) -> None:
        """Send one text frame, waiting while the peer is slow; ``LineClosed`` if closed."""

    def write_text_now(self, utf8: bytes) -> bool:
        """Write one text frame at once if nothing is in the way; False: nothing written."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (no-op when closing already)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class MediaStream:
    """One accepted socket's life. The socket calls ``on_text``/``on_binary`` per message
    and ``on_closed`` once; everything runs in the stream's own context (its call ids)."""

    def __init__(
        self,
        edge: Edge,
        socket: StreamSocket,
        server_tasks: set[asyncio.Task[None]] | None = None,
    ) -> None:
        self.edge = edge
        self.socket = socket
        self.context = contextvars.copy_context()
        self.frames = FrameCheck(edge.stats.frames_rejected)
        self.gaps = GapDetector(now=edge.clock)
        self._clock = edge.clock
        self.dropped_backlog = 0
        self.paced_s = 0.0
        self.runner_failed = False
        self._loop = asyncio.get_running_loop()
        self._unstarted = True
        self._reading = True  # False once the caller left, or we refused the socket
        self._start_timer: asyncio.TimerHandle | None = None
        self.emit: Emit = ignore  # the call's, once it has started
        self._queue: Line | None = None  # the call's queue once ``start`` is admitted
        self._transport: TwilioTransport | None = None
        self._hung_up = asyncio.Event()
        self._dtmf = TokenBucket(DTMF_PER_S, DTMF_BURST)
        self._pacer = AudioPacer()
        self._held: deque[bytes | None] = deque()  # read while pacing; None: the caller left
        self._pacing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._server_tasks = server_tasks  # the server waits for these before it stops
        self.task: asyncio.Task[None] | None = None
        """The call (or the overflow refusal) once ``start`` came: the server waits for it."""

    # -- driven by the socket -------------------------------------------------------------

    def opened(self) -> None:
        """The handshake was accepted; ``start`` must follow within ``START_TIMEOUT_S``."""
        self.edge.unstarted += 1
        self._start_timer = self._loop.call_later(
            START_TIMEOUT_S, self._start_timed_out, context=self.context
        )

    def on_text(self, payload: bytes) -> None:
        if not self._reading:
            return
        if self._pacing is not None:
            self._held.append(payload)
            return
        queue = self._queue
        if queue is not None:  # live: Twilio's media frame needs no event object
            audio = _media_audio(payload)
            if audio is not None:  # (``_live_audio`` and ``_caller_audio``, inline:
                timestamp_ms, ulaw = audio  # every frame of every call)
                now = self._clock()
                wait_s = self._pacer.wait_s(len(ulaw), now)
                if wait_s > 0:
                    self._hold(ulaw, timestamp_ms, wait_s)
                    return
                gaps = self.gaps.seen(timestamp_ms, now)
                if gaps:  # (nearly never: no loop over an empty tuple per frame)
                    self._report_gaps(gaps)
                if not queue.put_audio(_new(CallerAudio, (ulaw, timestamp_ms)), MAX_QUEUED_EVENTS):
                    self._backlog_full(queue)
                return
        self._handle(payload)

    def on_binary(self, size: int) -> None:
        if self._reading:
            self.frames.count("binary", f"expected a text frame, got {size} binary bytes")

    def on_closed(self) -> None:
        """The peer closed, or the connection is gone: the caller left."""
        if self._pacing is not None:
            self._held.append(None)  # after the audio already read, as it happened
            return
        self._caller_left()

    # -- before ``start`` -----------------------------------------------------------------

    def _handle(self, payload: bytes) -> None:
        event = self.frames.decode(payload)
        if self._queue is not None:
            self._on_live(event)
        elif self._unstarted:
            self._on_unstarted(event)

    def _on_unstarted(self, event: codec.Inbound | None) -> None:
        """Wait for a valid ``start``; refuse the socket on anything that rules it out."""
        match event:
            case codec.Start() as start:
                checked = check_start(self.edge, start)
                problem = checked if isinstance(checked, str) else admit(self.edge, start, checked)
                if problem is None:
                    self._started(start)
                else:
                    self._reject(problem)
            case codec.Media():
                self._reject("expected 'start' before 'media', got 'media'")
            case codec.Stop():
                self._stop_unstarted()
                self._reading = False
                self._close()
            case codec.Mark() | codec.Dtmf():
                self.frames.count("order", "expected 'start' first; ignored")
            case _:
                pass  # connected, or a frame already counted

    def _start_timed_out(self) -> None:
        self._start_timer = None
        if self._unstarted:
            self._reject(f"expected 'start' within {START_TIMEOUT_S:g} s, got nothing")

    def _stop_unstarted(self) -> None:
        """This socket no longer waits for its ``start`` (it came, or never will)."""
        if self._unstarted:
            self._unstarted = False
            self.edge.unstarted -= 1
            if self._start_timer is not None:
                self._start_timer.cancel()
                self._start_timer = None

    def _started(self, start: codec.Start) -> None:
        """An admitted ``start``: the call begins now, unless we are at capacity.

        All of it before the first await: the next socket's ``start`` may be parsed
        before this call's task first runs, and must see this call counted.
        """
        self._stop_unstarted()
        bind_call(start.call_sid, start.stream_sid)  # in this stream's context
        stats = self.edge.stats
        limit = self.edge.settings.max_calls
        if limit and stats.active_calls >= limit:
            self._reading = False
            self.task = self._spawn(self._refuse(start.call_sid))
            return
        stats.active_calls += 1
        stats.calls_total += 1
        self.emit = self.frames.emit = self.edge.events.emitter(start.call_sid)
        log_event(log, logging.INFO, "stream.started", tracks=",".join(start.tracks))
        params = {k: v for k, v in start.custom_parameters.items() if k != "token"}
        info = CallInfo(
            call_sid=start.call_sid,
            stream_sid=start.stream_sid,
            from_number=params.get("from", ""),
            to_number=params.get("to", ""),
            parameters=params,
            emit=self.emit,
        )
        # From here on the socket's frames go straight onto the queue (``_on_live``).
        self._queue = Line()
        self._transport = TwilioTransport(
            stream_sid=start.stream_sid,
            call_sid=start.call_sid,
            send_text=self.socket.send_text,
            close=self._close_async,
            rest=self.edge.rest,
            emit=self.emit,
            write_now=self.socket.write_text_now,
        )
        self._pacer.begin(self.edge.clock())
        self.task = self._spawn(self.run(start, info))

    # -- the call -------------------------------------------------------------------------

    async def run(self, start: codec.Start, info: CallInfo) -> None:
        stats = self.edge.stats
        try:
            await self._serve(info)
        finally:
            self.edge.live_calls.discard(start.call_sid)
            stats.active_calls -= 1
            stats.timestamp_gaps += self.gaps.timestamp_gaps
            stats.arrival_gaps += self.gaps.arrival_gaps
            ended = StreamEnded(
                gaps=self.gaps.summary(),
                rejected=dict(self.frames.rejected),
                dropped_backlog=self.dropped_backlog,
                paced_s=round(self.paced_s, 2),
            )
            log_event(log, logging.INFO, "stream.ended", **ended.data)
            self.emit(ended)

    async def _serve(self, info: CallInfo) -> None:
        queue, transport = self._queue, self._transport
        assert queue is not None and transport is not None
        runner = asyncio.create_task(self._run_runner(info, transport, queue))
        hung_up = asyncio.create_task(self._hung_up.wait())
        # Registered while it runs: a drain or the API (of any instance) can end it.
        live = self.edge.live.add(info.call_sid, queue.put_nowait, transport.hangup)
        try:
            await asyncio.wait({runner, hung_up}, return_when=asyncio.FIRST_COMPLETED)
            if not runner.done():
                # The caller left; CallerHungUp is queued. Let the runner finish its record.
                await asyncio.wait({runner}, timeout=HANGUP_GRACE_S)
                if not runner.done():
                    log_event(
                        log, logging.WARNING, "stream.runner_cancelled", grace_s=HANGUP_GRACE_S
                    )
                    self.emit(RunnerCancelled(HANGUP_GRACE_S))
        finally:
            self._reading = False
            others = self._tasks_besides_this()
            for task in (runner, hung_up, *others):
                task.cancel()
            await asyncio.wait({runner, hung_up, *others})
            self.edge.live.remove(live)
            if self.runner_failed:
                self._close(INTERNAL_ERROR, "internal error")
            await transport.close()

    async def _run_runner(self, info: CallInfo, transport: TwilioTransport, queue: Line) -> None:
        try:
            await self.edge.runner(info, transport, queue)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the runner's bug must end this call only, with a traceback
            self.runner_failed = True
            log.exception("stream.runner_failed")
            self.emit(RunnerFailed(repr(exc)))

    def _on_live(self, event: codec.Inbound | None) -> None:
        queue, clock = self._queue, self._clock
        assert queue is not None and self._transport is not None
        match event:
            case codec.Media(ulaw=ulaw, timestamp_ms=timestamp_ms):
                self._live_audio(ulaw, timestamp_ms)
            case codec.Dtmf(digit=digit):
                if self._dtmf.take(clock()):
                    queue.put_nowait(CallerDtmf(digit))
                else:
                    self.frames.count("dtmf_rate", f"over {DTMF_PER_S:g} key presses a second")
            case codec.Mark(name=name):
                if self._transport.marks.echoed(name):
                    queue.put_nowait(MarkPlayed(name))
                else:
                    self.frames.count("mark_unsent", "an echo of no mark we sent (or a second one)")
            case codec.Stop():
                self._end_reading(CallerHungUp("stop"))
            case codec.Start():
                self.frames.count("order", "a second 'start'; ignored")
            case _:
                pass

    def _live_audio(self, ulaw: bytes, timestamp_ms: int) -> None:
        """One frame of the caller's audio, now or (ahead of real time) after a wait."""
        now = self._clock()
        wait_s = self._pacer.wait_s(len(ulaw), now)
        if wait_s > 0:
            self._hold(ulaw, timestamp_ms, wait_s)
        else:
            self._caller_audio(ulaw, timestamp_ms, now)

    def _caller_audio(self, ulaw: bytes, timestamp_ms: int, now: float) -> None:
        queue = self._queue
        assert queue is not None
        gaps = self.gaps.seen(timestamp_ms, now)
        if gaps:
            self._report_gaps(gaps)
        # The cap counts the caller's frames only (``Line.put_audio``). A ``CallerAudio``
        # without its NamedTuple ``__new__``'s Python frame (fields in order).
        if not queue.put_audio(_new(CallerAudio, (ulaw, timestamp_ms)), MAX_QUEUED_EVENTS):
            self._backlog_full(queue)

    def _report_gaps(self, gaps: Sequence[Gap]) -> None:
        for gap in gaps:
            reported = MediaGap(gap.kind, round(gap.gap_ms), gap.coalesced)
            log_event(log, logging.INFO, "media.gap", **reported.data)
            self.emit(reported)

    def _backlog_full(self, queue: Line) -> None:
        """A caller frame dropped: the runner is 20 s behind (logged once a call)."""
        self.dropped_backlog += 1
        if self.dropped_backlog == 1:
            log_event(log, logging.WARNING, "stream.backlog", queued=queue.qsize())
            self.emit(BacklogFull(queue.qsize()))

    def _hold(self, ulaw: bytes, timestamp_ms: int, wait_s: float) -> None:
        """The caller's audio is ahead of real time: stop reading (TCP pushes back) and
        hold this frame, and whatever else was read with it, until real time catches up."""
        self.socket.pause_reading()
        self._pacing = self._spawn(self._pace(ulaw, timestamp_ms, wait_s))

    async def _pace(self, ulaw: bytes, timestamp_ms: int, wait_s: float) -> None:
        if self.paced_s == 0.0:
            log_event(log, logging.WARNING, "stream.paced", ahead_s=round(wait_s, 2))
            self.emit(CallerPaced(round(wait_s, 2)))
        self.paced_s += wait_s
        await self.edge.sleep(wait_s)
        self._pacing = None
        if not self._reading:
            return
        self._caller_audio(ulaw, timestamp_ms, self._clock())
        while self._held and self._pacing is None and self._reading:
            payload = self._held.popleft()
            if payload is None:
                self._caller_left()
            else:
                self.on_text(payload)
        if self._pacing is None:
            self.socket.resume_reading()

    def _caller_left(self) -> None:
        if self._unstarted:
            self._stop_unstarted()
        elif self._reading and self._queue is not None:
            self._end_reading(CallerHungUp("disconnect"))
        self._reading = False

    def _end_reading(self, event: CallerHungUp) -> None:
        assert self._queue is not None
        self._queue.put_nowait(event)
        self._reading = False
        self._hung_up.set()

    # -- frames and closing ---------------------------------------------------------------

    async def _refuse(self, call_sid: str) -> None:
        await refuse_at_capacity(self.edge, call_sid)
        self._close(TRY_AGAIN_LATER, "at capacity")

    def _reject(self, reason: str) -> None:
        self._stop_unstarted()
        self._reading = False
        self.edge.stats.streams_rejected += 1
        log_event(log, logging.WARNING, "stream.rejected", reason=reason)
        self._close(POLICY_VIOLATION, reason[:120])

    def _close(self, code: int = 1000, reason: str = "") -> None:
        self.socket.close(code, reason)

    async def _close_async(self) -> None:
        self._close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._loop.create_task(coro, context=self.context)
        for tasks in (self._tasks, self._server_tasks):
            if tasks is not None:
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        return task

    def _tasks_besides_this(self) -> set[asyncio.Task[None]]:
        current = asyncio.current_task()
        return {t for t in self._tasks if t is not current}
