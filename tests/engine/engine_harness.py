"""Drives a CallEngine by hand: a manual clock, a caller that streams 20 ms frames like
Twilio does, and a model of Twilio's playback buffer that echoes marks when their audio
has played (and at once on ``clear``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from callbridge.assistant import TurnTaking
from callbridge.audio import levels, ulaw
from callbridge.clock import ManualClock
from callbridge.engine.config import Script
from callbridge.engine.core import CallEngine
from callbridge.engine.events import (
    Command,
    EngineEvent,
    Hangup,
    Phase,
    ReplyAudio,
    ReplyDone,
    ReplyKind,
    ReplySegment,
    SendAudio,
    SendClear,
    SendMark,
    StartReply,
)
from callbridge.engine.frontend import Ear, hear_all
from callbridge.engine.runner import turn_rules
from callbridge.engine.transport import Heard, MarkPlayed

SPEECH = ulaw.encode(levels.tone(300, 20, -12))
SILENCE = b"\xff" * 160
BOT_WORD = ulaw.encode(levels.tone(440, 100, -20))  # 100 ms of bot audio per word


class EnergyVad:
    """Speech when the frame is loud: the tests decide what is speech, exactly."""

    def speech_probability(self, pcm16: bytes) -> float:
        return 1.0 if levels.rms_dbfs(pcm16) > -40 else 0.0

    def reset(self) -> None:
        pass


class LaggyVad(EnergyVad):
    """Like a model VAD: confirms speech only after ``lag_frames`` loud frames."""

    def __init__(self, lag_frames: int) -> None:
        self.lag_frames = lag_frames
        self.loud = 0

    def speech_probability(self, pcm16: bytes) -> float:
        self.loud = self.loud + 1 if super().speech_probability(pcm16) else 0
        return 1.0 if self.loud > self.lag_frames else 0.0


@dataclass
class Line:
    """Twilio's side: plays what it is sent in real time, echoes marks when reached."""

    play_end: float = 0.0
    pending: list[tuple[float, str]] = field(default_factory=list)
    audio_frames: int = 0


def every_deadline(engine: CallEngine) -> float | None:
    """``CallEngine.next_deadline`` the plain way: every part asked in every phase, then
    its own phase rules (the engine's one skips parts that cannot have one)."""
    if engine.phase is Phase.ENDED:
        return None
    listening, phase = engine.listening, engine.phase
    candidates = [
        engine.started_at + engine.turns.max_duration_s if phase is not Phase.ENDING else None,
        listening.idle_at if phase is Phase.LISTENING else None,
        listening.await_final_until,
        engine.ending.hangup_deadline(),
        engine.ending.deadline,
        engine.faults.hold_deadline(),
        engine.resumption.deadline() if phase is Phase.USER_SPEAKING else None,
        engine.playout.next_deadline() if engine.speaker.held() is None else None,
    ]
    present = [c for c in candidates if c is not None]
    return min(present) if present else None


class Harness:
    def __init__(
        self,
        *,
        stt: bool = False,
        script: Script | None = None,
        vad: object | None = None,
        judge_turns: bool = False,
        **turns: object,
    ) -> None:
        self.clock = ManualClock(100.0)
        self.engine = CallEngine(
            turn_rules(TurnTaking.model_validate(turns)),
            script or Script(),
            vad=vad or EnergyVad(),  # type: ignore[arg-type]
            vad_threshold=0.5,
            stt_enabled=stt,
            judge_turns=judge_turns,
        )
        self.line = Line()
        self.commands: list[Command] = []
        self.stamp_ms = 0
        self.engine.start(self.clock.now())
        self.collect()

    # -------------------------------------------------------------- plumbing

    def feed(self, event: EngineEvent) -> None:
        self.engine.handle(event, self.clock.now())
        self.collect()
        # Every state a test reaches checks the engine's quick deadline, and that the
        # speaker's quick "nothing due" left nothing due unsent (a held answer waits).
        engine, now = self.engine, self.clock.now()
        assert engine.next_deadline() == every_deadline(engine), engine.phase
        due = engine.playout.next_deadline()
        assert engine.ended or engine.speaker.held() is not None or due is None or due > now, (
            "audio due and not sent", due, now,
        )

    def collect(self) -> None:
        now = self.clock.now()
        for command in self.engine.take_commands():
            self.commands.append(command)
            match command:
                case SendAudio(ulaw=data):  # any whole number of 20 ms frames
                    self.line.play_end = max(self.line.play_end, now) + len(data) / 8000
                    self.line.audio_frames += len(data) // 160
                case SendMark(name=name):
                    self.line.pending.append((max(self.line.play_end, now), name))
                case SendClear():
                    echoes, self.line.pending = self.line.pending, []
                    self.line.play_end = now
                    for _, name in echoes:
                        self.engine.handle(MarkPlayed(name), now)
                case _:
                    pass

    def frame(self, speech: bool, *, arrive: bool = True) -> None:
        """20 ms pass; the caller's frame for them arrives (unless held back)."""
        self.clock.advance(0.02)
        now = self.clock.now()
        due = [m for m in self.line.pending if m[0] <= now + 1e-9]
        self.line.pending = [m for m in self.line.pending if m[0] > now + 1e-9]
        for _, name in due:
            self.feed(MarkPlayed(name))
        if arrive:  # as the metronome posts it: the tick's frame, decoded and measured
            frame = SPEECH if speech else SILENCE
            ear = Ear([frame], [self.stamp_ms], self.engine.turn.vad, None)
            self.feed(hear_all([ear])[0])
        self.stamp_ms += 20
        deadline = self.engine.next_deadline()
        if deadline is not None and deadline <= now + 1e-9:
            self.feed(Heard())
            after = self.engine.next_deadline()
            # A tick must move the deadline on, or the session's loop would spin.
            assert after is None or after > now, (self.engine.phase, after, now)

    def speak(self, ms: int) -> None:
        for _ in range(ms // 20):
            self.frame(True)

    def silence(self, ms: int) -> None:
        for _ in range(ms // 20):
            self.frame(False)

    def wait_until(self, predicate: object, max_ms: int = 60_000, speech: bool = False) -> int:
        """Stream frames until ``predicate()`` holds; return the ms it took."""
        assert callable(predicate)
        for step in range(max_ms // 20):
            if predicate():
                return step * 20
            self.frame(speech)
        raise AssertionError("condition not reached")

    # -------------------------------------------------------------- the reply side

    def starts(self, kind: ReplyKind | None = None) -> list[StartReply]:
        return [
            c
            for c in self.commands
            if isinstance(c, StartReply) and (kind is None or c.kind is kind)
        ]

    def count(self, kind: type) -> int:
        return sum(isinstance(c, kind) for c in self.commands)

    def answer(self, request: StartReply, *sentences: str) -> None:
        """Play the reply task's part: one segment per sentence, 100 ms of audio a word."""
        for index, text in enumerate(sentences):
            self.feed(ReplySegment(request.reply_id, index, text))
            self.feed(ReplyAudio(request.reply_id, index, BOT_WORD * len(text.split())))
        self.feed(ReplyDone(request.reply_id))

    def answer_latest(self, *sentences: str) -> StartReply:
        request = self.starts()[-1]
        if request.text is not None and not sentences:
            sentences = (request.text,)
        self.answer(request, *sentences)
        return request

    def hung_up(self) -> bool:
        return self.count(Hangup) > 0
