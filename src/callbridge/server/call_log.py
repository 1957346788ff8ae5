"""The call record's tap on a runner: call start and end, each turn, and the recording.

``CallLog.wrap(runner)`` decorates any ``CallRunner`` (the engine, the VAPI bridge, the
loopback echo). Everything it does on the call's owner task is synchronous and cheap:
build an op and ``submit`` it (a queue append), or lay a frame into the recording's
window. The SQL runs on the one writer task; the disk write happens every half second.

Facts only the engine, the socket adapter, the transport and the providers' retries
know (barge-ins, provider errors, hang-up reasons, gaps, rejected frames) arrive typed:
``on_event`` subscribes to the edge's ``CallEventBus``, which every call's ``emit``
feeds (``call_events.py``). Nothing here reads logs, and nothing that emits knows the
store exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from callbridge.call_events import CallEvent, EngineNote
from callbridge.clock import Clock, MonotonicClock
from callbridge.engine.events import TurnRecord
from callbridge.engine.runner import CallStats
from callbridge.engine.transport import (
    CallerAudio,
    CallerHungUp,
    CallInfo,
    CallRunner,
    CallTransport,
    Line,
    LineEvent,
)
from callbridge.server.live_board import LiveBoard
from callbridge.store.ops import (
    CallEnded,
    CallSeen,
    EventHappened,
    RecordingEnded,
    RecordingStarted,
    TurnEnded,
)
from callbridge.store.recordings import RATE_HZ, CallRecording, recording_path
from callbridge.store.writer import StoreWriter
from callbridge.telemetry.metrics import Metrics, ProviderNames

__all__ = ["CallLog", "Providers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Providers:
    """Provider names for the metrics' labels (implements ``ProviderNames``)."""

    stt: str
    llm: str
    tts: str


class _Live:
    """One call in progress, as the log sees it (touched only from the call's tasks)."""

    def __init__(self, info: CallInfo, mono0: float, wall0: float) -> None:
        self.info = info
        self.mono0 = mono0
        self.wall0 = wall0
        self.seq = 0
        self.outcome: str | None = None
        self.recording: CallRecording | None = None

    def wall(self, mono: float) -> datetime:
        return datetime.fromtimestamp(self.wall0 + (mono - self.mono0), UTC)


class CallLog:
    def __init__(
        self,
        writer: StoreWriter,
        *,
        assistant: str = "",
        recordings_dir: Path | None = None,
        metrics: Metrics | None = None,
        providers: ProviderNames | None = None,
        clock: Clock | None = None,
        wall_clock: Callable[[], float] = time.time,
        instance: str = "",
    ) -> None:
        """``recordings_dir`` set means record every call (``recordingEnabled: true``)."""
        self.writer = writer
        self.assistant = assistant
        self.recordings_dir = recordings_dir
        self.metrics = metrics
        self.providers = providers
        self._clock = clock or MonotonicClock()
        self._wall = wall_clock
        self._live: dict[str, _Live] = {}
        self.board = LiveBoard(self._clock)  # what the dashboard's live view shows
        self.instance = instance  # recorded on each call: where its stream is served

    # ------------------------------------------------------------------ runner hooks

    def wrap(self, runner: CallRunner) -> CallRunner:
        async def run(
            info: CallInfo, transport: CallTransport, line: Line
        ) -> None:
            call = self._begin(info)
            transport = _RecordingTransport(transport, call, self.board)
            line.add_tap(_line_tap(call))
            try:
                await runner(info, transport, line)
            except asyncio.CancelledError:
                call.outcome = call.outcome or "cancelled"
                raise
            except Exception:
                call.outcome = "runner_error"
                raise
            finally:
                self._finish(call)

        return run

    def on_turn(self, info: CallInfo, turn: TurnRecord) -> None:
        """``make_runner``'s ``on_turn``: committed by the writer as soon as it can."""
        call = self._live.get(info.call_sid)
        if call is None:
            log.warning("call_log.turn_of_unknown_call")
            return
        call.seq += 1
        self.board.turn(info.call_sid, turn.role, turn.latency_ms)
        self.writer.submit(
            TurnEnded(
                sid=info.call_sid,
                seq=call.seq,
                role=turn.role,
                kind=turn.kind,
                text=turn.text,
                heard_text=turn.heard_text,
                interrupted=turn.interrupted,
                started_at=call.wall(turn.started_at),
                ended_at=call.wall(turn.ended_at),
                latency_ms={k: round(v, 1) for k, v in turn.latency_ms.items()},
            )
        )
        if self.metrics is not None:
            self.metrics.observe_turn(
                role=turn.role,
                kind=turn.kind,
                latency_ms=turn.latency_ms,
                providers=self.providers,
            )

    def on_event(self, call_sid: str, event: CallEvent) -> None:
        """A ``CallEventBus`` listener: every call's typed events, into its record.

        (The metrics subscribe to the same bus on their own: ``Metrics.count_event``.)
        """
        call = self._live.get(call_sid)
        if isinstance(event, EngineNote):
            match event.kind:
                case "barge_in":
                    self.board.barge_in(call_sid)
                case "hangup" if call is not None:
                    call.outcome = call.outcome or str(event.data.get("reason") or "hangup")
                case "transfer" if call is not None:
                    call.outcome = "transferred"
                case "caller_hung_up" if call is not None:
                    call.outcome = call.outcome or "caller_hung_up"
                case _:
                    pass
        self._event(call_sid, event.kind, dict(event.data))

    def on_end(self, info: CallInfo, stats: CallStats) -> None:
        """``make_runner``'s ``on_end``: the engine's counters for the whole call."""
        if self.metrics is not None and stats.dropped_frames:
            self.metrics.playout_drops.inc(stats.dropped_frames)
        if stats.dropped_frames:
            self._event(info.call_sid, "playout_drops", {"frames": stats.dropped_frames})

    # ------------------------------------------------------------------ internals

    def _begin(self, info: CallInfo) -> _Live:
        call = _Live(info, self._clock.now(), self._wall())
        self._live[info.call_sid] = call
        self.board.begin(
            info.call_sid,
            from_number=info.from_number,
            to_number=info.to_number,
            direction=info.parameters.get("direction", "inbound"),
        )
        started = call.wall(call.mono0)
        self.writer.submit(
            CallSeen(
                sid=info.call_sid,
                at=started,
                stream_sid=info.stream_sid,
                from_number=info.from_number,
                to_number=info.to_number,
                status="in-progress",
                assistant=self.assistant,
                instance=self.instance,
            )
        )
        self._event(info.call_sid, "stream_started", {"streamSid": info.stream_sid})
        if self.recordings_dir is not None:
            path = recording_path(self.recordings_dir, info.call_sid)
            try:
                call.recording = CallRecording(path, clock=self._clock)
            except OSError as exc:
                # No recording is better than no call.
                log.error("recording.open_failed path=%s error=%s", path, exc)
                if self.metrics is not None:
                    self.metrics.errors.labels("recording").inc()
                self._event(info.call_sid, "recording_error", {"error": str(exc)})
            else:
                self.writer.submit(
                    RecordingStarted(
                        sid=info.call_sid,
                        at=started,
                        path=str(path),
                        rate_hz=RATE_HZ,
                        channels=2,
                    )
                )
        return call

    def _finish(self, call: _Live) -> None:
        sid = call.info.call_sid
        self._live.pop(sid, None)
        self.board.end(sid)
        if call.recording is not None:
            try:
                call.recording.close()
            except OSError as exc:
                log.error("recording.close_failed error=%s", exc)
            self.writer.submit(RecordingEnded(sid=sid, duration_ms=call.recording.duration_ms))
        self.writer.submit(
            CallEnded(sid=sid, at=call.wall(self._clock.now()), outcome=call.outcome or "ended")
        )

    def _event(self, sid: str, kind: str, data: dict[str, Any]) -> None:
        now = datetime.fromtimestamp(self._wall(), UTC)
        self.writer.submit(EventHappened(sid=sid, at=now, kind=kind, data=data))


class _RecordingTransport:
    """Lays what the bot sends into the recording and notes it on the live board.

    ``send_audio`` runs for every outbound message (25 a second a call): it is a plain
    function handing back the inner transport's coroutine, so the owner's ``await`` runs
    that one directly, with no coroutine of this wrapper's around it."""

    def __init__(self, inner: CallTransport, call: _Live, board: LiveBoard) -> None:
        self._inner = inner
        self._bot_audio = partial(board.bot_audio, call.info.call_sid)
        self._recording = call.recording  # set once, before the runner starts

    def send_audio(self, ulaw: bytes) -> Coroutine[Any, Any, None]:
        self._bot_audio()
        recording = self._recording
        if recording is not None:
            recording.bot_audio(ulaw)
        return self._inner.send_audio(ulaw)

    async def send_mark(self, name: str) -> None:
        await self._inner.send_mark(name)

    async def send_clear(self) -> None:
        recording = self._recording
        if recording is not None:
            recording.bot_cleared()
        await self._inner.send_clear()

    async def hangup(self) -> None:
        await self._inner.hangup()

    async def transfer(self, to: str) -> None:
        await self._inner.transfer(to)


def _line_tap(call: _Live) -> Callable[[LineEvent], None]:
    """What the log sees of each line event as the adapter posts it (inline: a frame
    costs no task switch): the caller's audio goes to the recording, a hang-up to the
    call's outcome. Without a recording, a caller frame costs one type check."""
    recording = call.recording  # set once, before the runner starts

    def hung_up(event: LineEvent) -> None:
        if type(event) is CallerHungUp:
            call.outcome = call.outcome or "caller_hung_up"

    if recording is None:
        return hung_up
    caller_audio = recording.caller_audio

    def record(event: LineEvent) -> None:
        if type(event) is CallerAudio:
            caller_audio(event.ulaw, event.timestamp_ms)
        else:
            hung_up(event)

    return record
