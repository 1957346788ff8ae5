"""The async shell: commands reach the transport in order, replies are cancelled and
waited for, and nothing of a cancelled reply is sent after ``clear``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from engine_harness import SILENCE, SPEECH, EnergyVad

from callbridge.assistant import TurnTaking
from callbridge.audio import levels, ulaw
from callbridge.engine.config import Script
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

    async def open_stream(self) -> NoSttStream:
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


class SlowTone:
    """100 ms of tone per word, produced in real time, recording whether it was stopped."""

    name = "tone"

    def __init__(self) -> None:
        self.stopped = 0
        self.started = 0

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.started += 1
        try:
            for _ in text.split():
                await asyncio.sleep(0.01)
                yield ulaw.encode(levels.tone(440, 100, -20))
        finally:
            self.stopped += 1


class MemoryLine:
    """Twilio's side, in memory: plays what it gets in real time, echoes each mark when
    the audio before it has played, and every pending mark at once on ``clear``."""

    def __init__(self, queue: Line) -> None:
        self.queue = queue
        self.sent: list[tuple[str, object]] = []
        self.hung_up = asyncio.Event()
        self._play_end = 0.0
        self._pending: dict[str, asyncio.TimerHandle] = {}

    async def send_audio(self, ulaw: bytes) -> None:
        now = asyncio.get_running_loop().time()
        self._play_end = max(self._play_end, now) + len(ulaw) / 8000
        self.sent.append(("audio", len(ulaw)))

    async def send_mark(self, name: str) -> None:
        self.sent.append(("mark", name))
        loop = asyncio.get_running_loop()
        self._pending[name] = loop.call_at(max(self._play_end, loop.time()), self._echo, name)

    def _echo(self, name: str) -> None:
        self._pending.pop(name, None)
        self.queue.put_nowait(MarkPlayed(name))

    async def send_clear(self) -> None:
        self.sent.append(("clear", None))
        self._play_end = 0.0
        for name, handle in list(self._pending.items()):
            handle.cancel()
            self._echo(name)

    async def hangup(self) -> None:
        self.sent.append(("hangup", None))
        self.hung_up.set()

    async def transfer(self, to: str) -> None:
        self.sent.append(("transfer", to))


def _session(line: MemoryLine, tts: SlowTone, **turns: object) -> CallSession:
    voice = Voice(vad=Vad(), stt=NoStt(), llm=EchoDigits(), tts=tts)  # type: ignore[arg-type]
    return CallSession.create(
        CallInfo("CA1", "MZ1"),
        line,
        voice,
        turn_rules(TurnTaking.model_validate(turns)),
        Script(first_message="Hello and welcome. Press one for billing, or two for support."),
    )


async def _stream_frames(queue: Line, frame: bytes, ms: int) -> None:
    for _ in range(ms // 20):
        queue.put_nowait(CallerAudio(frame))
        await asyncio.sleep(0.02)


async def test_greeting_dtmf_reply_and_hangup_reach_the_line() -> None:
    queue = Line()
    line, tts = MemoryLine(queue), SlowTone()
    session = _session(line, tts)
    task = asyncio.create_task(session.run(queue))
    await _stream_frames(queue, SILENCE, 400)
    kinds = [kind for kind, _ in line.sent]
    assert kinds.count("audio") >= 10 and "mark" in kinds
    queue.put_nowait(CallerDtmf("1"))
    await _stream_frames(queue, SILENCE, 300)
    assert sum(kind == "audio" for kind, _ in line.sent) > kinds.count("audio")
    assert session.engine.conversation.messages()[-1].dtmf == "1"
    queue.put_nowait(CallerHungUp())
    await asyncio.wait_for(task, 5)
    assert tts.started == tts.stopped  # every synthesis was closed


async def test_barge_in_clears_cancels_and_sends_no_stale_audio() -> None:
    queue = Line()
    line, tts = MemoryLine(queue), SlowTone()
    session = _session(line, tts, send_ahead_ms=200)
    task = asyncio.create_task(session.run(queue))
    await _stream_frames(queue, SILENCE, 200)
    assert any(kind == "audio" for kind, _ in line.sent)
    await _stream_frames(queue, SPEECH, 400)
    kinds = [kind for kind, _ in line.sent]
    assert kinds.count("clear") == 1
    after_clear = kinds[kinds.index("clear") + 1 :]
    assert "audio" not in after_clear  # nothing of the interrupted greeting follows
    assert tts.started == tts.stopped  # the TTS stream was really stopped
    queue.put_nowait(CallerHungUp())
    await asyncio.wait_for(task, 5)
