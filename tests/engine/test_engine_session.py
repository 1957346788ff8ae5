"""The async shell: commands reach the transport in order, replies are cancelled and
waited for, and nothing of a cancelled reply is sent after ``clear``.

Time is a manual clock: each caller frame moves it 20 ms, and the test lets the loop
run until it is idle, so nothing here waits in real time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from engine_harness import SILENCE, SPEECH, EnergyVad

from callbridge.assistant import TurnTaking
from callbridge.audio import levels, ulaw
from callbridge.clock import ManualClock
from callbridge.engine.config import Script
from callbridge.engine.metronome import Metronome
from callbridge.engine.runner import turn_rules
from callbridge.engine.session import CallSession, Voice
from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallerHungUp,
    CallInfo,
    Line,
    MarkPlayed,
)
from callbridge.providers.base import (
    LlmEvent,
    Message,
    SttEvent,
    TextDelta,
    ToolSpec,
)


class Vad:
    name = "energy"
    threshold = 0.5

    def new_stream(self) -> EnergyVad:
        return EnergyVad()


class NoStt:
    name = "none"

    async def open_stream(self, *, on_retry: object = None) -> NoSttStream:
        return NoSttStream()


class NoSttStream:
    def __init__(self) -> None:
        self._closed = asyncio.Event()

    def push_audio(self, ulaw: bytes) -> None:
        pass

    def finalize(self) -> None:
        pass

    async def events(self) -> AsyncIterator[SttEvent]:
        await self._closed.wait()
        return
        yield

    async def aclose(self) -> None:
        self._closed.set()


class EchoDigits:
    name = "echo"

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LlmEvent]:
        last = messages[-1]
        text = f"You pressed {last.dtmf}. " if last.dtmf else "I heard you. "
        for word in (text * 5).split(" "):
            yield TextDelta(word + " ")


class Tone:
    """100 ms of tone per word, a word per turn of the event loop, recording whether
    each synthesis was closed."""

    name = "tone"

    def __init__(self) -> None:
        self.stopped = 0
        self.started = 0

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.started += 1
        try:
            for _ in text.split():
                await asyncio.sleep(0)
                yield ulaw.encode(levels.tone(440, 100, -20))
        finally:
            self.stopped += 1


class MemoryLine:
    """Twilio's side, in memory, on the manual clock: plays what it gets at 8 kHz, echoes
    each mark once the audio before it has played, and every pending mark on ``clear``."""

    def __init__(self, line: Line, clock: ManualClock) -> None:
        self.line = line
        self.clock = clock
        self.sent: list[tuple[str, object]] = []
        self._play_end = 0.0
        self._pending: list[tuple[float, str]] = []

    async def send_audio(self, ulaw: bytes) -> None:
        self._play_end = max(self._play_end, self.clock.now()) + len(ulaw) / 8000
        self.sent.append(("audio", len(ulaw)))

    async def send_mark(self, name: str) -> None:
        self.sent.append(("mark", name))
        self._pending.append((max(self._play_end, self.clock.now()), name))

    def play(self) -> None:
        """Echo the marks whose audio has played by now."""
        now = self.clock.now()
        due = [name for at, name in self._pending if at <= now + 1e-9]
        self._pending = [(at, name) for at, name in self._pending if at > now + 1e-9]
        for name in due:
            self.line.put_nowait(MarkPlayed(name))

    async def send_clear(self) -> None:
        self.sent.append(("clear", None))
        self._play_end = 0.0
        pending, self._pending = self._pending, []
        for _, name in pending:
            self.line.put_nowait(MarkPlayed(name))

    async def hangup(self) -> None:
        self.sent.append(("hangup", None))

    async def transfer(self, to: str) -> None:
        self.sent.append(("transfer", to))


class Call:
    def __init__(self, **turns: object) -> None:
        self.clock = ManualClock(100.0)
        self.line = Line()
        self.metronome = Metronome(self.clock, autostart=False)  # stepped by ``stream``
        self.memory = MemoryLine(self.line, self.clock)
        self.tts = Tone()
        voice = Voice(vad=Vad(), stt=NoStt(), llm=EchoDigits(), tts=self.tts)  # type: ignore[arg-type]
        self.session = CallSession.create(
            CallInfo("CA1", "MZ1"),
            self.memory,
            voice,
            turn_rules(TurnTaking.model_validate(turns)),
            Script(first_message="Hello and welcome. Press one for billing, or two for support."),
            clock=self.clock,
            metronome=self.metronome,
        )
        self.task = asyncio.create_task(self.session.run(self.line))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.memory.sent]

    def audio_sizes(self) -> list[int]:
        """The length of each ``media`` message sent, in bytes."""
        return [size for kind, size in self.memory.sent if kind == "audio"]  # type: ignore[misc]

    async def settle(self) -> None:
        """Let the call's tasks run until none has anything left to do at this time."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def stream(self, frame: bytes, ms: int) -> None:
        for _ in range(ms // 20):
            self.clock.advance(0.02)
            self.memory.play()
            self.line.put_nowait(CallerAudio(frame))
            self.metronome.tick()  # the process's 20 ms beat: this frame, and the time
            await self.settle()

    async def hang_up(self) -> None:
        self.line.put_nowait(CallerHungUp())
        await asyncio.wait_for(self.task, 5)


async def test_greeting_dtmf_reply_and_hangup_reach_the_line() -> None:
    call = Call()
    await call.stream(SILENCE, 400)
    kinds = call.kinds()
    # Audio flows from the first frame (20 ms): 380 ms played and 200 ms sent ahead are
    # 29 frames (30 when the last message took its second frame early), and the first
    # sentence has its mark. Messages carry two frames, but for an odd one sent alone
    # while the lead fills (a word of TTS audio, 5 frames, at a time) or before a mark;
    # once the lead is full, every message is two frames.
    sizes = call.audio_sizes()
    assert sum(sizes) // 160 in (29, 30) and "mark" in kinds
    assert set(sizes) == {160, 320} and sizes[-6:] == [320] * 6
    call.line.put_nowait(CallerDtmf("1"))
    await call.stream(SILENCE, 300)
    assert call.kinds().count("clear") == 1  # the key press cut the greeting
    assert call.kinds().count("audio") > kinds.count("audio")
    assert call.session.engine.conversation.messages()[-1].dtmf == "1"
    await call.hang_up()
    assert call.tts.started == call.tts.stopped  # every synthesis was closed
    assert call.metronome.members == 0  # the call that ended left the metronome


async def test_barge_in_clears_cancels_and_sends_no_stale_audio() -> None:
    call = Call(send_ahead_ms=200)
    await call.stream(SILENCE, 200)
    assert "audio" in call.kinds()
    await call.stream(SPEECH, 400)
    kinds = call.kinds()
    assert kinds.count("clear") == 1
    after_clear = kinds[kinds.index("clear") + 1 :]
    assert "audio" not in after_clear  # nothing of the interrupted greeting follows
    assert call.tts.started == call.tts.stopped  # the TTS stream was really stopped
    await call.hang_up()


async def test_a_deadline_wakes_the_owner_on_the_beat_without_caller_audio() -> None:
    """No caller frames at all (the line is silent, not sending): the idle reprompt is
    a deadline, and the first metronome beat past it and its grace (a live call's own
    frames would have woken it by then) wakes the owner to say it."""
    call = Call(idle_timeout_s=1.0)
    await call.stream(SILENCE, 20)  # the greeting starts
    engine = call.session.engine
    idle_at = None
    for _ in range(1000):  # beats with no frames; the marks echo as the greeting plays
        call.clock.advance(0.02)
        call.memory.play()
        call.metronome.tick()
        await call.settle()
        if idle_at is None:
            idle_at = engine.listening.idle_at  # the greeting is over: listening
        elif engine.listening.reprompts:
            break
    assert idle_at is not None and engine.listening.reprompts == 1
    grace = call.metronome.grace_s
    assert idle_at + grace <= call.clock.now() < idle_at + grace + 0.02 + 1e-9
    await call.hang_up()
    assert call.metronome.members == 0
