"""BridgeCore with a manual clock: pacing, barge-in, stale audio, hang-up ordering.

``Line`` plays the part of Twilio's buffer: it plays what it is sent in real time, echoes
each mark when the audio before it has played, and on ``clear`` drops its buffer and
echoes the pending marks at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callbridge.audio import levels, ulaw
from callbridge.clock import ManualClock
from callbridge.engine.bridge import (
    Apologise,
    ApologyAudio,
    ApologyDone,
    BridgeCommand,
    BridgeCore,
    BridgeOptions,
    EndRemote,
    ForwardAudio,
    RemoteAudio,
    RemoteFailed,
    RemoteSignal,
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
from callbridge.engine.transport import CallerAudio, CallerHungUp, Heard, MarkPlayed

BOT = ulaw.encode(levels.tone(440, 1000, -12))  # one second of agent speech
NEW = ulaw.encode(levels.tone(660, 400, -12))
CALLER = ulaw.encode(levels.tone(300, 20, -12))


@dataclass
class Line:
    play_end: float = 0.0
    pending: list[tuple[float, str]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    audio_at: list[float] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)


class Bridge:
    def __init__(self, **options: object) -> None:
        self.clock = ManualClock(50.0)
        self.core = BridgeCore(BridgeOptions(**options))  # type: ignore[arg-type]
        self.line = Line()
        self.commands: list[BridgeCommand] = []

    def feed(self, event: object) -> None:
        self.core.handle(event, self.clock.now())  # type: ignore[arg-type]
        now = self.clock.now()
        for command in self.core.take_commands():
            self.commands.append(command)
            match command:
                case SendAudio(ulaw=data):
                    self.line.play_end = max(self.line.play_end, now) + len(data) / 8000
                    self.line.audio += data
                    self.line.audio_at.append(now)
                case SendMark(name=name):
                    self.line.pending.append((max(self.line.play_end, now), name))
                case SendClear():
                    self.line.clears.append(now)
                    echoes, self.line.pending = self.line.pending, []
                    self.line.play_end = now
                    for _, name in echoes:
                        self.feed(MarkPlayed(name))
                case _:
                    pass

    def signal(self, signal: RemoteSignal) -> None:
        self.feed(RemoteSignalled(signal))

    def step(self, ms: int = 20, *, caller: bytes | None = None) -> None:
        """Time passes in 20 ms steps: marks that played echo, due ticks fire."""
        for _ in range(ms // 20):
            self.clock.advance(0.02)
            now = self.clock.now()
            due = [m for m in self.line.pending if m[0] <= now + 1e-9]
            self.line.pending = [m for m in self.line.pending if m[0] > now + 1e-9]
            for _, name in due:
                self.feed(MarkPlayed(name))
            if caller is not None:
                self.feed(CallerAudio(caller))
            deadline = self.core.next_deadline()
            if deadline is not None and deadline <= now + 1e-9:
                self.feed(Heard())

    def count(self, kind: type) -> int:
        return sum(isinstance(c, kind) for c in self.commands)

    def events(self, kind: str) -> list[CallEvent]:
        """The record events of ``kind`` the core emitted."""
        return [c.event for c in self.commands
                if isinstance(c, RecordEvent) and c.event.kind == kind]

    def lead_s(self) -> float:
        return self.line.play_end - self.clock.now()


def test_agent_audio_is_paced_with_a_bounded_lead_and_arrives_intact() -> None:
    b = Bridge(send_ahead_ms=200)
    b.feed(RemoteAudio(BOT[:3000]))  # chunks of any size, faster than real time
    b.feed(RemoteAudio(BOT[3000:]))
    assert b.count(SendAudio) == 5  # 200 ms of lead, not the whole second, 40 ms a message
    assert b.lead_s() <= 0.2 + 1e-9
    for step in range(60):
        b.step()
        # A message goes when its first frame is due and takes the second along: the
        # lead stays above what a message a frame kept, and at most a frame over it.
        assert b.lead_s() <= 0.2 + 0.02 + 1e-9
        if step < 35:  # (audio left to send)
            assert b.lead_s() > 0.2 - 0.02 + 1e-9
    assert bytes(b.line.audio) == BOT  # 1 s is 50 whole frames: nothing added or lost
    assert all(len(c.ulaw) == 320 for c in b.commands if isinstance(c, SendAudio))


def test_end_of_agent_speech_sends_a_mark_after_the_audio() -> None:
    b = Bridge()
    b.signal("bot-started")
    b.feed(RemoteAudio(BOT[:1000]))  # 125 ms: the last frame is padded
    b.signal("bot-stopped")
    kinds = [type(c) for c in b.commands]
    assert kinds == [SendAudio] * 4 + [SendMark]  # 7 frames: 40 + 40 + 40 + 20 ms
    assert b.core.bot_speaking
    b.step(200)
    assert not b.core.bot_speaking  # the mark came back: the caller heard it all


def test_a_gap_in_the_agent_audio_closes_the_stretch_with_a_mark() -> None:
    b = Bridge(segment_idle_ms=200)
    b.feed(RemoteAudio(BOT[:1600]))
    b.step(180)
    assert b.count(SendMark) == 0
    b.step(40)
    assert b.count(SendMark) == 1


def test_caller_audio_goes_to_the_agent_as_it_arrives() -> None:
    b = Bridge()
    b.feed(CallerAudio(CALLER))
    assert b.commands == [ForwardAudio(CALLER)]


def test_user_interrupted_clears_the_line_and_drops_queued_audio() -> None:
    b = Bridge()
    b.feed(RemoteAudio(BOT))
    b.step(300)
    sent_before = b.count(SendAudio)
    b.signal("interrupted")
    assert b.count(SendClear) == 1 and b.line.clears == [b.clock.now()]
    assert not b.core.bot_speaking
    b.step(1000)
    assert b.count(SendAudio) == sent_before  # the rest of the second never went out


def test_no_stale_agent_audio_after_a_clear() -> None:
    b = Bridge(stale_guard_ms=300)
    b.feed(RemoteAudio(BOT))
    b.step(100)
    b.signal("interrupted")
    sent = b.count(SendAudio)
    b.feed(RemoteAudio(BOT[:1600]))  # already on its way when the agent stopped
    b.step(100)
    b.feed(RemoteAudio(BOT[:1600]))
    b.step(500)
    assert b.count(SendAudio) == sent
    assert b.core.stale_dropped_bytes == 3200
    # The agent's next reply is heard in full.
    b.signal("bot-started")
    b.feed(RemoteAudio(NEW))
    b.step(600)
    assert bytes(b.line.audio).endswith(NEW)


def test_audio_after_the_guard_window_is_played() -> None:
    b = Bridge(stale_guard_ms=300)
    b.feed(RemoteAudio(BOT[:800]))
    b.signal("interrupted")
    b.step(300)
    b.feed(RemoteAudio(NEW))  # no speech-update came, but the guard has passed
    b.step(600)
    assert bytes(b.line.audio).endswith(NEW)


def test_caller_speech_over_the_bot_clears_before_the_agent_decides() -> None:
    b = Bridge(clear_on_user_speech=True)
    b.feed(RemoteAudio(BOT))
    b.step(200)
    b.signal("user-started")
    assert b.count(SendClear) == 1
    b.signal("interrupted")  # the agent's verdict follows: nothing left to clear
    assert b.count(SendClear) == 1


def test_caller_speech_waits_for_the_agent_when_so_configured() -> None:
    b = Bridge(clear_on_user_speech=False)
    b.feed(RemoteAudio(BOT))
    b.step(200)
    b.signal("user-started")
    assert b.count(SendClear) == 0
    b.signal("interrupted")
    assert b.count(SendClear) == 1


def test_caller_speech_while_the_bot_is_silent_clears_nothing() -> None:
    b = Bridge()
    b.feed(RemoteAudio(BOT[:800]))
    b.signal("bot-stopped")
    b.step(300)  # played, mark echoed
    b.signal("user-started")
    b.signal("interrupted")
    assert b.count(SendClear) == 0


def test_agent_end_hangs_up_only_after_the_goodbye_has_played() -> None:
    b = Bridge()
    b.feed(RemoteAudio(BOT[:4000]))  # a 500 ms goodbye
    b.signal("ended")
    assert b.count(Hangup) == 0
    b.step(480)
    assert b.count(Hangup) == 0  # its mark has not come back yet
    b.step(60)
    assert b.count(Hangup) == 1 and b.core.ended
    assert bytes(b.line.audio) == BOT[:4000]
    last_audio = max(i for i, c in enumerate(b.commands) if isinstance(c, SendAudio))
    hangup = next(i for i, c in enumerate(b.commands) if isinstance(c, Hangup))
    assert last_audio < hangup
    assert b.core.next_deadline() is None


def test_agent_end_hangs_up_when_marks_never_come_back() -> None:
    b = Bridge(hangup_mark_timeout_s=2.0)
    b.feed(RemoteAudio(BOT[:800]))
    b.signal("ended")
    b.line.pending.clear()
    b.line.play_end = 1e9  # a line that never plays or echoes
    deadline = b.core.next_deadline()
    assert deadline is not None
    b.clock.advance(1.9)
    b.feed(Heard())
    assert b.count(Hangup) == 0
    b.clock.advance(0.1)
    b.feed(Heard())
    (hangup,) = [c for c in b.commands if isinstance(c, Hangup)]
    assert "timed out" in hangup.reason


def test_agent_end_with_nothing_playing_hangs_up_at_once() -> None:
    b = Bridge()
    b.signal("ended")
    assert b.count(Hangup) == 1


def test_a_lost_agent_is_apologised_for_after_queued_audio_then_hung_up() -> None:
    b = Bridge()
    b.feed(RemoteAudio(BOT[:1600]))
    b.feed(RemoteFailed("vapi: socket closed with code 1011 'injected drop'", "vapi"))
    assert b.count(Apologise) == 1 and b.count(Hangup) == 0
    (failed,) = b.events("provider_failed")
    assert failed.data == {"stage": "bridge", "provider": "vapi",
                           "error": "vapi: socket closed with code 1011 'injected drop'"}
    # The dead agent's leftovers are not played; the caller's audio goes nowhere.
    b.feed(RemoteAudio(NEW))
    b.feed(CallerAudio(CALLER))
    b.step(300)  # the agent's queued 200 ms played; the apology is still being made
    assert b.count(Hangup) == 0 and b.count(ForwardAudio) == 0
    apology = ulaw.encode(levels.tone(500, 600, -12))
    b.feed(ApologyAudio(apology))
    b.feed(ApologyDone())
    b.step(400)
    assert b.count(Hangup) == 0  # the apology is still playing
    b.step(400)
    (hangup,) = [c for c in b.commands if isinstance(c, Hangup)]
    assert hangup.reason == "apology"
    assert bytes(b.line.audio) == BOT[:1600] + apology  # what the caller heard, in order
    assert [e.data for e in b.events("hangup")] == [{"reason": "apology"}]
    assert b.core.failure is not None and "1011" in b.core.failure


def test_an_apology_that_never_finishes_still_hangs_up() -> None:
    b = Bridge(apology_grace_s=2.0)
    b.feed(RemoteFailed("vapi: unreachable", "vapi"))
    b.step(1900)
    assert b.count(Hangup) == 0
    b.step(200)
    assert b.count(Hangup) == 1 and b.core.ended


def test_caller_hangup_ends_the_agent_call_and_nothing_follows() -> None:
    b = Bridge()
    b.feed(RemoteAudio(BOT))
    b.feed(CallerHungUp("stop"))
    assert isinstance(b.commands[-1], EndRemote) and b.count(Hangup) == 0
    n = len(b.commands)
    b.feed(RemoteAudio(BOT))
    b.feed(CallerAudio(CALLER))
    b.step(200)
    assert len(b.commands) == n and b.core.next_deadline() is None
