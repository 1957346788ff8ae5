"""The load benchmark's caller: the simulator's metrics at a fraction of its cost.

``LiveCall`` is built for fidelity and scripting (two tasks, futures, event objects per
frame, full JSON parsing); 200 of them saturate a core before the server does. This is
the same caller as a plain state machine that the worker's scheduler calls once per
20 ms (``tick``) and once per server message (``on_message``):

- outbound ``media`` texts come from ``wire.media`` with pre-encoded payloads;
- server frames are classified by exact prefix/suffix against the server's canonical
  compact form; anything else (marks, odd shapes, errors) goes through the strict
  ``wire.parse_server``, so the verdicts are the full parser's;
- ``LeanPlayback`` is ``PlaybackBuffer``'s model (``playback.PlaybackModel``) keeping
  byte counts instead of audio and booking straight into ``TurnTracker`` (no event
  objects);
- the metrics are ``metrics.TurnTracker``/``PacingMeter`` themselves: same definitions.

Sans-I/O: every method takes the time; the owner moves the bytes.
"""

from __future__ import annotations

import binascii
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from callbridge.errors import TwilioProtocolError
from callbridge.simulator import wire
from callbridge.simulator.metrics import CallerSpeech, PacingMeter, TurnTracker
from callbridge.simulator.playback import (
    BYTES_PER_S,
    FRAME_BYTES,
    NONE_AUDIBLE,
    PlaybackModel,
    frame_count,
)
from callbridge.simulator.voice import SILENCE, Utterance

__all__ = [
    "AT_CAPACITY", "CLEAR", "LeanCall", "LeanPlayback", "Script", "ServerReader", "fast_audible",
    "fast_audible_frames",
]

FRAME_S = 0.020
AT_CAPACITY = 1013  # RFC 6455 "Try Again Later": the server's close when it is full
CLEAR = wire.ServerClear()
_LOUD = bytes(1 if _b < 0x70 or 0x80 <= _b < 0xF0 else 0 for _b in range(256))


def fast_audible(ulaw_audio: bytes) -> bool:
    """Any sample louder than ~-40 dBFS peak (μ-law codes below 0x70/0xF0): a table
    lookup, where ``voice.is_audible`` decodes and takes an RMS."""
    return 1 in ulaw_audio.translate(_LOUD)  # an int: no TypeError tried first


def fast_audible_frames(ulaw_audio: bytes) -> int:
    """``fast_audible`` per 20 ms slice, as ``playback.audible_frames`` gives it: the
    loud samples are found once, and only slices between the first and last loud one are
    searched (none in a message of one or two frames)."""
    loud = ulaw_audio.translate(_LOUD)
    first = loud.find(1)
    if first < 0:
        return NONE_AUDIBLE
    lo, hi = first // FRAME_BYTES, loud.rfind(1) // FRAME_BYTES
    mask = 1 << lo | 1 << hi
    for i in range(lo + 1, hi):
        if loud.find(1, i * FRAME_BYTES, (i + 1) * FRAME_BYTES) >= 0:
            mask |= 1 << i
    return mask


class ServerReader:
    """Server text → μ-law bytes (media, the hot path) or a ``wire.ServerMessage``."""

    def __init__(self, stream_sid: str) -> None:
        self.stream_sid = stream_sid
        sid = stream_sid.encode()
        self._media = b'{"event":"media","streamSid":"' + sid + b'","media":{"payload":"'
        self._media_len = len(self._media)
        self._clear = b'{"event":"clear","streamSid":"' + sid + b'"}'

    def read(self, text: bytes) -> bytes | wire.ServerMark | wire.ServerClear | wire.ServerOther:
        """Raises ``TwilioProtocolError`` exactly where ``wire.parse_server`` would."""
        if text.startswith(self._media) and text.endswith(b'"}}'):
            try:  # strict base64 has no '"' or '\\': the object is exactly what it seems
                return binascii.a2b_base64(text[self._media_len : -3], strict_mode=True)
            except binascii.Error:
                pass  # the strict parser says what is wrong with it
        elif text == self._clear:
            return CLEAR
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TwilioProtocolError("expected UTF-8 text in a text frame") from exc
        message = wire.parse_server(decoded, self.stream_sid)
        return message.ulaw if isinstance(message, wire.ServerMedia) else message


class LeanPlayback(PlaybackModel):
    """Twilio's playback queue as byte counts; books into ``tracker`` as it plays.

    The rules are ``playback.PlaybackModel``'s; marks to echo collect in ``echoes``
    (name, cleared) for the owner to send and drain.
    """

    def __init__(self, tracker: TurnTracker, *, reply_gap_ms: float = 500.0) -> None:
        super().__init__(reply_gap_ms=reply_gap_ms)
        self.tracker = tracker
        self.echoes: list[tuple[str, bool]] = []
        self.speech_starts: list[float] = []
        self.audible_bytes = 0
        self.last_audible_end_s: float | None = None

    def receive_media(self, now: float, nbytes: int, audible_frames: int) -> None:
        self.media(now, nbytes, audible_frames)

    def receive_mark(self, now: float, name: str) -> None:
        self.mark(now, name)

    def receive_clear(self, now: float) -> None:
        self.clear(now)

    def advance(self, now: float) -> None:
        self.play(now)

    def _on_played(self, start_s: float, n: int, audible: bool, ulaw: bytes, offset: int) -> None:
        duration_s = n / BYTES_PER_S
        if audible:
            self.audible_bytes += n
            self.last_audible_end_s = start_s + duration_s
        self.tracker.audio_played(start_s, duration_s, audible=audible)

    def _on_mark(self, name: str, at_s: float, cleared: bool) -> None:
        self.echoes.append((name, cleared))

    def _on_speech_started(self, at_s: float) -> None:
        self.speech_starts.append(at_s)
        self.tracker.bot_speech_started(at_s)

    def _on_speech_ended(self, at_s: float, cleared: bool) -> None:
        self.tracker.bot_speech_ended()


class _Step(enum.Enum):
    GREETING = "wait for the greeting"
    GREETING_QUIET = "wait for the greeting to end"
    NEXT_TURN = "start a turn"
    ASKING = "say the question"
    REPLY = "wait for the reply"
    REPLY_QUIET = "wait for the reply to end"
    BARGE_WAIT = "wait for 800 ms of reply"
    BARGING = "say the interruption"
    DONE = "hang up"


@dataclass(slots=True)
class Script:
    """The benchmark's caller: hear the greeting out, then for ``duration_s`` alternate
    a question heard to the end with one interrupted after ``barge_after_ms`` of reply."""

    question: Utterance
    interruption: Utterance
    duration_s: float
    barge_after_ms: float = 800.0
    barge_in: bool = True  # False: every question is heard to the end (latency benchmark)
    quiet_s: float = 0.6
    speech_timeout_s: float = 5.0  # waits for bot speech (the greeting, a reply)
    quiet_timeout_s: float = 15.0  # waits for the bot to fall quiet
    step: _Step = _Step.GREETING
    deadline_s: float = 0.0
    end_s: float = 0.0
    turn: int = 0
    timeouts: list[str] = field(default_factory=list)


class LeanCall:
    """One call's caller side; the owner sends what ``opening``/``tick``/``on_message``
    return, and closes once ``done`` (after sending ``closing()``)."""

    def __init__(
        self,
        script: Script,
        *,
        stream_sid: str,
        account_sid: str,
        call_sid: str,
        parameters: dict[str, str],
        reply_gap_ms: float = 500.0,
        classify_frames: Callable[[bytes], int] = fast_audible_frames,
    ) -> None:
        self.script = script
        self.stream_sid, self.account_sid, self.call_sid = stream_sid, account_sid, call_sid
        self.parameters = parameters
        self.reader = ServerReader(stream_sid)
        self.tracker = TurnTracker()
        self.pacing = PacingMeter(run_gap_ms=reply_gap_ms)
        self.playback = LeanPlayback(self.tracker, reply_gap_ms=reply_gap_ms)
        self._classify_frames = classify_frames
        self._seq = 0
        self._k = 0
        self.speech = CallerSpeech(self.tracker)
        self.t0_s = 0.0
        self.ended_by: str | None = None
        self.close_code: int | None = None  # the server's close frame, if it sent one
        self.frames_sent = self.frames_received = self.marks_received = 0
        self.bot_audio_bytes = 0
        self.send_lag_ms: list[float] = []
        self.protocol_errors: list[str] = []

    @property
    def done(self) -> bool:
        return self.ended_by is not None

    @property
    def next_due_s(self) -> float:
        return self.t0_s + self._k * FRAME_S

    def opening(self, now: float) -> list[str]:
        """``connected`` and ``start``; the media clock starts now."""
        self.t0_s = now
        self._seq = 1
        self.script.deadline_s = now + self.script.speech_timeout_s
        return [
            wire.connected(),
            wire.start(
                1,
                account_sid=self.account_sid,
                call_sid=self.call_sid,
                stream_sid=self.stream_sid,
                parameters=self.parameters,
            ),
        ]

    def closing(self) -> str:
        self._seq += 1
        return wire.stop(
            self._seq,
            account_sid=self.account_sid,
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
        )

    def tick(self, now: float) -> list[str]:
        """The 20 ms beat: play what is due, move the script, send the next frame."""
        k = self._k
        late_s = now - (self.t0_s + k * FRAME_S)
        self.send_lag_ms.append(late_s * 1000.0 if late_s > 0.0 else 0.0)
        playback = self.playback
        playback.play(now)
        out = self._echoes() if playback.echoes else []
        if self.script.step is not _Step.ASKING or self.speech.utterance is None:
            self._step(now)  # (while a question is being said, nothing can move)
        if self.ended_by is not None:
            return out
        payload = self._next_payload(now)
        self._seq += 1
        out.append(wire.media(self._seq, k + 1, k * 20, self.stream_sid, payload))
        self._k = k + 1
        self.frames_sent += 1
        return out

    def on_message(self, now: float, text: bytes) -> list[str]:
        try:
            message = self.reader.read(text)
        except TwilioProtocolError as exc:
            self.protocol_errors.append(str(exc))
            return []
        if isinstance(message, bytes):
            n = len(message)
            self.frames_received += frame_count(n)
            self.bot_audio_bytes += n
            self.pacing.frame(now, n / BYTES_PER_S)
            self.playback.media(now, n, self._classify_frames(message))
        elif isinstance(message, wire.ServerMark):
            self.marks_received += 1
            self.pacing.restart()
            self.playback.receive_mark(now, message.name)
        elif isinstance(message, wire.ServerClear):
            self.tracker.clear_received(now)
            self.pacing.restart()
            self.playback.receive_clear(now)
        else:
            assert isinstance(message, wire.ServerOther)
            self.protocol_errors.append(f"unexpected event {message.event!r} from server")
        return self._echoes() if self.playback.echoes else []

    def end(self, by: str) -> None:
        if self.ended_by is None:
            self.ended_by = by

    @property
    def refused(self) -> bool:
        """Turned away at capacity: closed with 1013 before any bot audio (not a failure
        of the call's handling, a limit doing its job)."""
        return self.close_code == AT_CAPACITY and self.bot_audio_bytes == 0

    def result(self) -> dict[str, object]:
        """The figures the benchmark merges (same keys as the full caller's)."""
        turns = self.tracker.turns
        problems = list(self.protocol_errors)
        refused = self.refused
        if refused:
            problems.append(f"refused: the server closed with {AT_CAPACITY} (at capacity)")
        elif self.ended_by == "server":
            problems.append("the server ended the call")
        if self.bot_audio_bytes == 0 and not refused:
            problems.append("no bot audio")
        return {
            "ok": not problems,
            "refused": refused,
            "why": "; ".join(problems),
            "latency_ms": [t.latency_ms for t in turns if t.latency_ms is not None],
            "bargein_ms": [t.bargein_ms for t in turns if t.barge_in and t.bargein_ms],
            "stale_ms": [t.stale_ms for t in turns if t.barge_in],
            "jitter_ms": [round(j, 1) for j in self.pacing.samples_ms],
            "underruns": self.playback.underruns,
            "send_lag_ms": [round(v, 1) for v in self.send_lag_ms],
            "turns": len(turns),
            "frames": [self.frames_sent, self.frames_received],
            "marks_received": self.marks_received,
            "timeouts": list(self.script.timeouts),
        }

    # ------------------------------------------------------------ private

    def _echoes(self) -> list[str]:
        out: list[str] = []
        for name, _cleared in self.playback.echoes:
            self._seq += 1
            out.append(wire.mark_echo(self._seq, self.stream_sid, name))
        self.playback.echoes.clear()
        return out

    def _step(self, now: float) -> None:
        """Advance the script as far as the state allows (several steps may pass)."""
        s, pb = self.script, self.playback
        while True:
            step = s.step
            if step is _Step.GREETING:
                if not (pb.speaking or self._timed_out(now)):
                    return
                self._go(_Step.GREETING_QUIET, now + s.quiet_timeout_s)
            elif step is _Step.GREETING_QUIET or step is _Step.REPLY_QUIET:
                if not (self._silent_for(now) >= s.quiet_s or self._timed_out(now)):
                    return
                if step is _Step.GREETING_QUIET:
                    s.end_s = now + s.duration_s
                else:
                    s.turn += 1
                self._go(_Step.NEXT_TURN, 0.0)
            elif step is _Step.NEXT_TURN:
                if now >= s.end_s:
                    s.step = _Step.DONE
                    self.end("caller")
                    return
                self._say(s.question)
                self._go(_Step.ASKING, 0.0)
            elif step is _Step.ASKING or step is _Step.BARGING:
                if self.speech.utterance is not None:
                    return
                if step is _Step.BARGING:
                    self._go(_Step.REPLY_QUIET, now + s.quiet_timeout_s)
                elif s.turn % 2 == 0 or not s.barge_in:
                    self._go(_Step.REPLY, now + s.speech_timeout_s)
                else:
                    self._go(_Step.BARGE_WAIT, now + s.speech_timeout_s)
            elif step is _Step.REPLY:
                if not (pb.speaking or self._timed_out(now)):
                    return
                self._go(_Step.REPLY_QUIET, now + s.quiet_timeout_s)
            elif step is _Step.BARGE_WAIT:
                if pb.reply_played_ms >= s.barge_after_ms:
                    self._say(s.interruption)
                    self._go(_Step.BARGING, 0.0)
                elif self._timed_out(now):
                    self._go(_Step.REPLY_QUIET, now + s.quiet_timeout_s)
                else:
                    return
            else:
                return

    def _go(self, step: _Step, deadline_s: float) -> None:
        self.script.step, self.script.deadline_s = step, deadline_s

    def _timed_out(self, now: float) -> bool:
        if now < self.script.deadline_s:
            return False
        self.script.timeouts.append(self.script.step.value)
        return True

    def _silent_for(self, now: float) -> float:
        last = self.playback.last_audible_end_s
        return max(0.0, now - (self.t0_s if last is None else last))

    def _say(self, utterance: Utterance) -> None:
        self.speech.say(utterance)

    def _next_payload(self, now: float) -> str:
        utterance = self.speech.utterance
        i = self.speech.next_frame(now, bot_speaking=self.playback.speaking)
        if utterance is None or i is None:
            return SILENCE.payloads[0]
        return utterance.payloads[i]
