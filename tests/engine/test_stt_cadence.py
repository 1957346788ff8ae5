"""The transcriber's cadence follows the caller: ``SttLink`` tells a stream that can
batch (``QuietAwareStream``) when the caller has been quiet ``quiet_after_ms`` and, with
the very frame that carries speech, that they speak again; the call's shell pushes each
frame after the engine heard it, so that verdict is the frame's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from engine_harness import SILENCE, SPEECH
from test_engine_session import Call, EchoDigits, MemoryLine, Tone, Vad

from callbridge.clock import ManualClock
from callbridge.engine.config import Script, TurnRules
from callbridge.engine.events import EngineEvent, SttUp
from callbridge.engine.metronome import Metronome
from callbridge.engine.session import CallSession, Voice
from callbridge.engine.speech import SpeechTracker
from callbridge.engine.stt_link import SttLink
from callbridge.engine.transport import CallInfo, Line
from callbridge.errors import ProviderError
from callbridge.providers.base import QuietAwareStream, SttEvent, TranscriptUpdate

Log = list[tuple[str, object]]


class PacedStream:
    """Records every call in order: ("audio", frame), ("quiet", bool), ("finalize", n)."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.finalized = 0
        self._events: asyncio.Queue[SttEvent | BaseException | None] = asyncio.Queue()

    def push_audio(self, ulaw: bytes) -> None:
        self.log.append(("audio", ulaw))

    def caller_quiet(self, quiet: bool) -> None:
        self.log.append(("quiet", quiet))

    def finalize(self) -> None:
        self.finalized += 1
        self.log.append(("finalize", self.finalized))
        self._events.put_nowait(TranscriptUpdate("", is_final=True, from_finalize=True))

    def emit(self, item: SttEvent | BaseException | None) -> None:
        self._events.put_nowait(item)

    async def events(self) -> AsyncIterator[SttEvent]:
        while (item := await self._events.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def aclose(self) -> None:
        self.emit(None)


class PlainStream(PacedStream):
    """A transcriber with no quiet cadence (OpenAI's, the fake's): frames only."""

    caller_quiet = None  # type: ignore[assignment]


class Vendor:
    name = "deepgram"

    def __init__(self, stream_type: type[PacedStream] = PacedStream) -> None:
        self.stream_type = stream_type
        self.opened: list[PacedStream] = []

    async def open_stream(self, *, on_retry: object = None) -> PacedStream:
        stream = self.stream_type([])
        self.opened.append(stream)
        return stream

    @property
    def log(self) -> Log:
        """What the first stream was told."""
        return self.opened[0].log


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class Caller:
    """A speech tracker fed like the engine's, then the frame to the link (the shell's
    order)."""

    def __init__(self, link: SttLink, speech: SpeechTracker) -> None:
        self.link, self.speech, self.now = link, speech, 0.0

    def frames(self, count: int, *, speech: bool) -> None:
        for _ in range(count):
            self.now += 0.02
            self.speech.update(speech, -20.0 if speech else -70.0, 20, self.now, None)
            self.link.push_audio(SPEECH if speech else SILENCE)


def quiet_marks(log: Log) -> list[tuple[int, bool]]:
    """Each quiet/speech word with the number of frames pushed before it."""
    marks, frames = [], 0
    for kind, value in log:
        if kind == "audio":
            frames += 1
        elif kind == "quiet":
            marks.append((frames, bool(value)))
    return marks


def test_quiet_aware_streams_are_recognised_and_plain_ones_are_not() -> None:
    assert isinstance(PacedStream([]), QuietAwareStream)
    assert not isinstance(PlainStream([]), QuietAwareStream)


async def test_quiet_after_the_hangover_and_speech_with_its_first_frame() -> None:
    vendor, speech = Vendor(), SpeechTracker()
    link = SttLink(vendor, list[EngineEvent]().append, speech=speech, quiet_after_ms=300)
    task = asyncio.create_task(link.run())
    await _settle()
    caller = Caller(link, speech)
    caller.frames(20, speech=False)  # quiet from the 15th frame: 300 ms of silence
    caller.frames(1, speech=True)  # speech: told right after this frame, not one later
    caller.frames(10, speech=True)
    caller.frames(14, speech=False)  # 280 ms: still the speech cadence
    assert quiet_marks(vendor.log) == [(15, True), (21, False)]
    caller.frames(1, speech=False)
    assert quiet_marks(vendor.log)[-1] == (46, True)
    assert [v for k, v in vendor.log if k == "audio"] == (
        [SILENCE] * 20 + [SPEECH] * 11 + [SILENCE] * 15
    )  # every frame, in order, whatever the cadence
    await link.aclose()
    await asyncio.wait_for(task, 1)


async def test_a_blip_of_speech_flushes_and_the_quiet_returns_after_the_hangover() -> None:
    vendor, speech = Vendor(), SpeechTracker()
    link = SttLink(vendor, list[EngineEvent]().append, speech=speech, quiet_after_ms=100)
    task = asyncio.create_task(link.run())
    await _settle()
    caller = Caller(link, speech)
    caller.frames(5, speech=False)
    caller.frames(1, speech=True)
    caller.frames(5, speech=False)
    assert quiet_marks(vendor.log) == [(5, True), (6, False), (11, True)]
    await link.aclose()
    await asyncio.wait_for(task, 1)


async def test_a_stream_without_a_quiet_cadence_gets_every_frame_and_nothing_else() -> None:
    vendor, speech = Vendor(PlainStream), SpeechTracker()
    link = SttLink(vendor, list[EngineEvent]().append, speech=speech)
    task = asyncio.create_task(link.run())
    await _settle()
    caller = Caller(link, speech)
    caller.frames(30, speech=False)
    caller.frames(5, speech=True)
    link.finalize()
    assert [k for k, _ in vendor.log] == ["audio"] * 35 + ["finalize"]
    assert link.quiet is False  # it follows the caller all the same
    await link.aclose()
    await asyncio.wait_for(task, 1)


async def test_without_a_tracker_the_stream_is_never_told_quiet() -> None:
    vendor = Vendor()
    link = SttLink(vendor, list[EngineEvent]().append)
    task = asyncio.create_task(link.run())
    await _settle()
    for _ in range(50):
        link.push_audio(SILENCE)
    assert [k for k, _ in vendor.log] == ["audio"] * 50
    await link.aclose()
    await asyncio.wait_for(task, 1)


async def test_a_reconnect_resends_the_ring_first_then_tells_the_new_stream_quiet() -> None:
    """The re-sent audio goes at the stream's usual cadence, before anything else; the
    caller's state reaches the new stream after it, and a finalize owed after that."""
    vendor, speech, posted = Vendor(), SpeechTracker(), list[EngineEvent]()
    link = SttLink(vendor, posted.append, speech=speech, delays_s=(0.0,))
    task = asyncio.create_task(link.run())
    await _settle()
    caller = Caller(link, speech)
    caller.frames(5, speech=True)
    caller.frames(20, speech=False)  # quiet since the 15th silent frame
    first = vendor.opened[0]
    first.emit(ProviderError("deepgram", "closed the stream: code 1011", retryable=True))
    await _settle()
    link.finalize()  # while down: owed to the next stream
    await _settle()
    second = vendor.opened[1]
    assert second.log[:25] == [("audio", SPEECH)] * 5 + [("audio", SILENCE)] * 20  # the ring
    assert second.log[25:] == [("quiet", True), ("finalize", 1)]
    assert any(isinstance(e, SttUp) for e in posted)
    caller.frames(1, speech=True)
    assert second.log[-2:] == [("audio", SPEECH), ("quiet", False)]
    await link.aclose()
    await asyncio.wait_for(task, 1)


# ---------------------------------------------------------------- the call's shell


class PacedStt:
    name = "deepgram"

    def __init__(self) -> None:
        self.log: Log = []

    async def open_stream(self, *, on_retry: object = None) -> PacedStream:
        return PacedStream(self.log)


class SttCall(Call):
    """``test_engine_session``'s call on the manual clock and metronome, with a
    transcriber that records what it is told."""

    def __init__(self) -> None:
        self.clock = ManualClock(100.0)
        self.line = Line()
        self.metronome = Metronome(self.clock, autostart=False)
        self.memory = MemoryLine(self.line, self.clock)
        self.tts = Tone()
        self.stt = PacedStt()
        voice = Voice(vad=Vad(), stt=self.stt, llm=EchoDigits(), tts=self.tts)  # type: ignore[arg-type]
        self.session = CallSession.create(
            CallInfo("CA1", "MZ1"), self.memory, voice, TurnRules(), Script(),
            clock=self.clock, metronome=self.metronome,
        )
        self.task = asyncio.create_task(self.session.run(self.line))


async def test_the_call_tells_speech_in_the_wake_up_of_its_first_frame() -> None:
    """Through the whole owner loop on the manual clock: the transcriber hears the
    caller's frames after the engine did, so the first loud frame is followed by
    "speech" at once; silence makes it "quiet" again after 300 ms, and the turn's
    ``Finalize`` comes after every frame it covers."""
    call = SttCall()
    stt = call.stt
    await call.stream(SILENCE, 400)
    assert quiet_marks(stt.log) == [(15, True)]
    await call.stream(SPEECH, 20)
    assert stt.log[-2:] == [("audio", SPEECH), ("quiet", False)]
    await call.stream(SPEECH, 400)
    await call.stream(SILENCE, 600)
    # Quiet again 300 ms after the last loud frame (the 41st).
    assert quiet_marks(stt.log) == [(15, True), (21, False), (56, True)]
    # The early Finalize (200 ms of silence) comes after the frame that made it due.
    finalize = stt.log.index(("finalize", 1))
    assert sum(k == "audio" for k, _ in stt.log[:finalize]) == 41 + 10
    assert [k for k, _ in stt.log].count("finalize") == 1
    await call.hang_up()
