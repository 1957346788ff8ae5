"""Twilio's end of one Media Streams socket, with a scripted caller behind it.

Two tasks per call: the send loop emits one ``media`` message every 20 ms of real time
(silence when the script has nothing to say: Twilio always streams) and advances the
playback model; the receive loop feeds what the server sends into that model. Scripts
(``say``, ``dtmf``, waits) run in the owner's task and only queue work or wait for state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from types import TracebackType

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from callbridge.clock import Clock, MonotonicClock
from callbridge.errors import TwilioProtocolError
from callbridge.simulator import wire
from callbridge.simulator.dialer import CallOptions, TwimlPlan, sign
from callbridge.simulator.metrics import CallerSpeech, PacingMeter, TurnTracker
from callbridge.simulator.playback import (
    AudioPlayed,
    BotSpeechEnded,
    BotSpeechStarted,
    MarkEchoed,
    PlaybackBuffer,
    PlaybackEvent,
    audible_frames,
    frame_count,
)
from callbridge.simulator.recording import Recorder
from callbridge.simulator.report import CallReport
from callbridge.simulator.voice import SILENCE, Utterance, is_audible

__all__ = ["LiveCall"]

FRAME_S = 0.020


class LiveCall:
    """One connected call. Use as ``async with LiveCall(plan, options) as call``.

    ``classify`` judges one 20 ms slice of bot audio (a message is judged slice by slice).
    """

    def __init__(
        self,
        plan: TwimlPlan,
        options: CallOptions,
        *,
        clock: Clock | None = None,
        record: bool = False,
        reply_gap_ms: float = 500.0,
        classify: Callable[[bytes], bool] = is_audible,
    ) -> None:
        if plan.stream_url is None:
            raise ValueError("the TwiML names no <Stream> to connect to")
        self.plan = plan
        self.options = options
        self.stream_sid = wire.new_sid("MZ")
        self._clock = clock or MonotonicClock()
        self._classify = classify
        self.playback = PlaybackBuffer(self._clock, reply_gap_ms=reply_gap_ms)
        self.tracker = TurnTracker()
        self.pacing = PacingMeter(run_gap_ms=reply_gap_ms)
        self.recorder: Recorder | None = None
        self._record = record
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0
        self.speech = CallerSpeech(self.tracker)
        self._utterance_done: asyncio.Future[None] | None = None
        self._pulse: asyncio.Future[None] | None = None
        self.t0_s = 0.0
        self.ended_at_s: float | None = None
        self.hangup_by: str | None = None
        self.frames_sent = 0
        self.frames_received = 0
        self.marks_received = 0
        self.marks_echoed_played = 0
        self.marks_echoed_cleared = 0
        self.bot_audio_bytes = 0
        self.audible_bytes = 0
        self.last_audible_end_s: float | None = None
        self.bot_speech_starts: list[float] = []
        self.clear_times: list[float] = []
        self.send_lag_ms: collections.deque[float] = collections.deque(maxlen=100_000)
        self.protocol_errors: list[str] = []

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> LiveCall:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.hangup()

    async def open(self) -> None:
        url = self.plan.stream_url
        assert url is not None
        headers = {
            "X-Twilio-Signature": sign(self.options.sign_token or self.options.auth_token, url),
            "User-Agent": "Twilio.TmeWs/1.0",
        }
        # Twilio's media sockets are uncompressed; so are ours (DESIGN.md §9).
        self._ws = await connect(
            self.options.connect_url(url),
            additional_headers=headers,
            compression=None,
            open_timeout=10,
            close_timeout=2,
        )
        self._pulse = asyncio.get_running_loop().create_future()
        await self._ws.send(wire.connected())
        self._seq += 1
        await self._ws.send(
            wire.start(
                self._seq,
                account_sid=self.options.account_sid,
                call_sid=self.options.call_sid,
                stream_sid=self.stream_sid,
                parameters=self.plan.parameters,
            )
        )
        self.t0_s = self._clock.now()
        if self._record:
            self.recorder = Recorder(self.t0_s)
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="sim-send"),
            asyncio.create_task(self._receive_loop(), name="sim-receive"),
        ]

    @property
    def ended(self) -> bool:
        return self.ended_at_s is not None

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code of the stream (1011 is the server's own error)."""
        return self._ws.close_code if self._ws is not None else None

    async def hangup(self) -> None:
        """The caller hangs up: Twilio sends ``stop`` and closes the socket."""
        if self._ws is None:
            return
        if not self.ended:
            self._end("caller")
            with contextlib.suppress(ConnectionClosed):
                self._seq += 1
                await self._ws.send(
                    wire.stop(
                        self._seq,
                        account_sid=self.options.account_sid,
                        call_sid=self.options.call_sid,
                        stream_sid=self.stream_sid,
                    )
                )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._ws.close()

    # ------------------------------------------------------------ script actions

    async def say(self, utterance: Utterance) -> None:
        """Speak ``utterance`` in real time; returns once its last frame was sent."""
        if self.ended:
            return
        if self._utterance_done is not None and not self._utterance_done.done():
            self._utterance_done.set_result(None)  # a new utterance cuts the old one
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.speech.say(utterance)
        self._utterance_done = done
        await self.wait_until(done.done, None)

    async def dtmf(self, digit: str) -> None:
        if self.ended or self._ws is None:
            return
        self.tracker.dtmf_sent(self._clock.now(), digit, bot_speaking=self.playback.speaking)
        self._seq += 1
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(wire.dtmf(self._seq, self.stream_sid, digit))

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float | None) -> bool:
        """Wait until ``predicate()`` holds (checked on every frame and message), the call
        ends, or the timeout passes; return the predicate's final value."""
        deadline = None if timeout_s is None else self._clock.now() + timeout_s
        while not predicate():
            if self.ended or self._pulse is None:
                return predicate()
            remaining = None if deadline is None else deadline - self._clock.now()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait({self._pulse}, timeout=remaining)
        return True

    @property
    def elapsed_s(self) -> float:
        end = self.ended_at_s if self.ended_at_s is not None else self._clock.now()
        return max(0.0, end - self.t0_s)

    def bot_silent_for_s(self) -> float:
        """How long the caller has heard no bot audio (since the call began, if never)."""
        last = self.last_audible_end_s if self.last_audible_end_s is not None else self.t0_s
        return max(0.0, self._clock.now() - last)

    def report(self, name: str = "") -> CallReport:
        end = self.ended_at_s if self.ended_at_s is not None else self._clock.now()
        return CallReport(
            name=name,
            call_sid=self.options.call_sid,
            stream_sid=self.stream_sid,
            duration_s=end - self.t0_s,
            turns=list(self.tracker.turns),
            jitter_ms=list(self.pacing.samples_ms),
            frames_sent=self.frames_sent,
            frames_received=self.frames_received,
            marks_received=self.marks_received,
            marks_echoed_played=self.marks_echoed_played,
            marks_echoed_cleared=self.marks_echoed_cleared,
            clears=self.tracker.clears,
            underruns=self.playback.underruns,
            underrun_ms=self.playback.underrun_ms,
            cleared_ms=self.playback.cleared_bytes / 8.0,
            bot_audio_ms=self.bot_audio_bytes / 8.0,
            hangup_by=self.hangup_by,
            close_code=self.close_code,
            send_lag_ms=list(self.send_lag_ms),
            protocol_errors=list(self.protocol_errors),
        )

    # ------------------------------------------------------------ loops

    async def _send_loop(self) -> None:
        assert self._ws is not None
        k = 0
        try:
            while not self.ended:
                due = self.t0_s + k * FRAME_S
                wait = due - self._clock.now()
                if wait > 0:
                    await asyncio.sleep(wait)
                now = self._clock.now()
                self.send_lag_ms.append(max(0.0, now - due) * 1000.0)
                await self._echo(self._apply(self.playback.advance()))
                frame, payload = self._next_frame(now)
                self._seq += 1
                await self._ws.send(wire.media(self._seq, k + 1, k * 20, self.stream_sid, payload))
                if self.recorder is not None:
                    self.recorder.caller(now, frame)
                self.frames_sent += 1
                k += 1
                self._wake()
        except ConnectionClosed:
            self._end("server")

    async def _receive_loop(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                now = self._clock.now()
                try:
                    message = wire.parse_server(raw, self.stream_sid)
                except TwilioProtocolError as exc:
                    self.protocol_errors.append(str(exc))
                    continue
                events: list[PlaybackEvent] = []
                match message:
                    case wire.ServerMedia(ulaw=audio):
                        events = self._media(now, audio)
                    case wire.ServerMark(name=name):
                        self.marks_received += 1
                        self.pacing.restart()
                        events = self.playback.receive_mark(name)
                    case wire.ServerClear():
                        self.tracker.clear_received(now)
                        self.pacing.restart()
                        self.clear_times.append(now)
                        events = self.playback.receive_clear()
                    case wire.ServerOther(event=event):
                        self.protocol_errors.append(f"unexpected event {event!r} from server")
                await self._echo(self._apply(events))
                self._wake()
        except ConnectionClosed:
            pass
        self._end("server")

    # ------------------------------------------------------------ private

    def _media(self, now: float, audio: bytes) -> list[PlaybackEvent]:
        """Bot audio arrives: its frames are counted and judged 20 ms at a time."""
        self.frames_received += frame_count(len(audio))
        self.pacing.frame(now, len(audio) / 8000.0)
        audible = audible_frames(audio, self._classify)
        return self.playback.receive_media(audio, audible_frames=audible)

    def _next_frame(self, now: float) -> tuple[bytes, str]:
        utterance = self.speech.utterance
        i = self.speech.next_frame(now, bot_speaking=self.playback.speaking)
        if utterance is None or i is None:
            return SILENCE.frames[0], SILENCE.payloads[0]
        done = self._utterance_done
        if self.speech.utterance is None and done is not None and not done.done():
            done.set_result(None)  # that was its last frame
        return utterance.frames[i], utterance.payloads[i]

    def _apply(self, events: list[PlaybackEvent]) -> list[str]:
        """Book playback events into the metrics; return the marks to echo."""
        echoes: list[str] = []
        for event in events:
            match event:
                case AudioPlayed(start_s=start, ulaw=audio, audible=audible):
                    self.bot_audio_bytes += len(audio)
                    if audible:
                        self.audible_bytes += len(audio)
                        self.last_audible_end_s = start + len(audio) / 8000.0
                    self.tracker.audio_played(start, len(audio) / 8000.0, audible=audible)
                    if self.recorder is not None:
                        self.recorder.bot(start, audio)
                case MarkEchoed(name=name, cleared=cleared):
                    echoes.append(name)
                    if cleared:
                        self.marks_echoed_cleared += 1
                    else:
                        self.marks_echoed_played += 1
                case BotSpeechStarted(at_s=at):
                    self.bot_speech_starts.append(at)
                    self.tracker.bot_speech_started(at)
                case BotSpeechEnded():
                    self.tracker.bot_speech_ended()
        return echoes

    async def _echo(self, names: list[str]) -> None:
        if not names or self._ws is None or self.ended:
            return
        for name in names:
            self._seq += 1
            await self._ws.send(wire.mark_echo(self._seq, self.stream_sid, name))

    def _end(self, by: str) -> None:
        if self.ended_at_s is None:
            self.ended_at_s = self._clock.now()
            self.hangup_by = by
            if self._utterance_done is not None and not self._utterance_done.done():
                self._utterance_done.set_result(None)
            self._wake()

    def _wake(self) -> None:
        """Let every ``wait_until`` re-check its predicate."""
        if self._pulse is not None:
            self._pulse.set_result(None)
            self._pulse = asyncio.get_running_loop().create_future()
