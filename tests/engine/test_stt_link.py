"""The call's transcriber across vendor faults: reconnect with the retry policy, re-send
the audio the vendor had not finalised, report down/up/given-up, never raise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from callbridge.engine.events import EngineEvent, SttDown, SttFailed, SttUp
from callbridge.engine.stt_link import SttLink
from callbridge.errors import ProviderError
from callbridge.providers.base import SttEvent, TranscriptUpdate


class Stream:
    """One vendor connection: records audio, answers ``finalize`` unless stalled."""

    def __init__(self, *, stall: bool = False) -> None:
        self.audio: list[bytes] = []
        self.unfinalised = 0  # loud frames since this connection's last final
        self.finalized = 0
        self.closed = False
        self.stall = stall
        self.answer_later = False  # finals wait for ``answer()`` (a vendor's latency)
        self._owed: list[int] = []
        self._events: asyncio.Queue[SttEvent | BaseException | None] = asyncio.Queue()

    def push_audio(self, ulaw: bytes) -> None:
        self.audio.append(ulaw)
        self.unfinalised += ulaw == LOUD

    def finalize(self) -> None:
        self.finalized += 1
        if self.stall:
            return
        heard, self.unfinalised = self.unfinalised, 0
        self._owed.append(heard)
        if not self.answer_later:
            self.answer()

    def answer(self) -> None:
        heard = self._owed.pop(0)
        self.emit(TranscriptUpdate(f"{heard} loud frames", is_final=True, from_finalize=True))

    def emit(self, event: SttEvent | BaseException | None) -> None:
        self._events.put_nowait(event)

    async def events(self) -> AsyncIterator[SttEvent]:
        while (item := await self._events.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def aclose(self) -> None:
        self.closed = True
        self.emit(None)


class Vendor:
    name = "deepgram"

    def __init__(self, *, refuse: int = 0, stalls: int = 0) -> None:
        self.refuse = refuse  # this many opens fail first
        self.stalls = stalls  # this many streams never answer a finalize
        self.opened: list[Stream] = []

    async def open_stream(self, *, on_retry: object = None) -> Stream:
        if self.refuse:
            self.refuse -= 1
            raise ProviderError("deepgram", "cannot connect: refused", retryable=True)
        stream = Stream(stall=len(self.opened) < self.stalls)
        self.opened.append(stream)
        return stream


class Sleeps:
    def __init__(self) -> None:
        self.waited: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waited.append(seconds)


LOUD, QUIET = b"\x01" * 160, b"\xff" * 160


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_drop_mid_utterance_reconnects_and_resends_what_was_not_finalised() -> None:
    vendor, posted, sleeps = Vendor(), list[EngineEvent](), Sleeps()
    link = SttLink(vendor, posted.append, delays_s=(1.0, 2.0, 4.0), sleep=sleeps)
    task = asyncio.create_task(link.run())
    await _settle()
    first = vendor.opened[0]
    for _ in range(3):
        link.push_audio(LOUD)
    link.finalize()  # "3 loud frames": the ring starts afresh after this final
    await _settle()
    for _ in range(4):
        link.push_audio(LOUD)
    first.emit(ProviderError("deepgram", "closed the stream: code 1011 'NET-0001'",
                             retryable=True))
    await _settle()
    link.push_audio(LOUD)  # spoken after the reconnect
    link.finalize()
    await _settle()
    second = vendor.opened[1]
    assert first.closed
    assert second.audio == [LOUD] * 5  # 4 unfinalised, re-sent, then 1 live
    finals = [e.text for e in posted if isinstance(e, TranscriptUpdate)]
    assert finals == ["3 loud frames", "5 loud frames"]
    down = next(e for e in posted if isinstance(e, SttDown))
    assert "NET-0001" in down.error
    assert [e for e in posted if isinstance(e, SttUp)] == [SttUp("deepgram", resent_ms=80)]
    assert sleeps.waited == []  # the first reconnect is immediate
    await link.aclose()
    await asyncio.wait_for(task, 1)


async def test_unreachable_vendor_is_retried_on_the_policy_then_given_up() -> None:
    vendor, posted, sleeps = Vendor(refuse=99), list[EngineEvent](), Sleeps()
    link = SttLink(vendor, posted.append, delays_s=(1.0, 2.0, 4.0), sleep=sleeps)
    await asyncio.wait_for(link.run(), 1)  # returns; raises nothing
    assert sleeps.waited == [1.0, 2.0, 4.0]
    # Down from the first failed attempt (the engine stops waiting on words), then gone.
    assert posted == [SttDown("deepgram", "deepgram: cannot connect: refused"),
                      SttFailed("deepgram", "deepgram: cannot connect: refused")]


async def test_a_vendor_that_comes_back_within_the_policy_is_used() -> None:
    vendor, posted, sleeps = Vendor(refuse=2), list[EngineEvent](), Sleeps()
    link = SttLink(vendor, posted.append, delays_s=(1.0, 2.0, 4.0), sleep=sleeps)
    task = asyncio.create_task(link.run())
    await _settle()
    assert sleeps.waited == [1.0, 2.0] and len(vendor.opened) == 1
    assert posted == [SttDown("deepgram", "deepgram: cannot connect: refused"),
                      SttUp("deepgram", resent_ms=0)]
    await link.aclose()
    await asyncio.wait_for(task, 1)


async def test_a_stream_that_keeps_dropping_without_words_is_given_up() -> None:
    vendor, posted, sleeps = Vendor(), list[EngineEvent](), Sleeps()
    link = SttLink(vendor, posted.append, delays_s=(0.5, 0.5), sleep=sleeps)
    task = asyncio.create_task(link.run())
    for n in range(3):
        await _settle()
        vendor.opened[n].emit(ProviderError("deepgram", "closed 1011", retryable=True))
    await asyncio.wait_for(task, 1)
    assert isinstance(posted[-1], SttFailed)
    assert sum(isinstance(e, SttDown) for e in posted) == 2


async def test_a_fatal_close_and_a_client_bug_end_in_stt_failed_not_an_exception() -> None:
    for fault in (ProviderError("deepgram", "closed 1008 bad data", retryable=False),
                  RuntimeError("client bug")):
        vendor, posted = Vendor(), list[EngineEvent]()
        link = SttLink(vendor, posted.append, delays_s=(0.1,), sleep=Sleeps())
        task = asyncio.create_task(link.run())
        await _settle()
        if isinstance(fault, RuntimeError):
            vendor.opened[0].emit(ProviderError("deepgram", "drop", retryable=True))
            await _settle()
            vendor.opened[1].emit(fault)  # one retry in the policy: this is the last
        else:
            vendor.opened[0].emit(fault)
        await asyncio.wait_for(task, 1)
        assert isinstance(posted[-1], SttFailed)


async def test_a_stalled_vendor_is_replaced_after_the_final_timeout() -> None:
    vendor, posted = Vendor(stalls=1), list[EngineEvent]()
    link = SttLink(vendor, posted.append, delays_s=(1.0,), sleep=Sleeps(), final_timeout_s=0.05)
    task = asyncio.create_task(link.run())
    await _settle()
    link.push_audio(LOUD)
    link.finalize()  # the first vendor never answers it
    await asyncio.sleep(0.15)
    assert len(vendor.opened) == 2
    assert vendor.opened[1].audio == [LOUD] and vendor.opened[1].finalized == 1
    assert [e.text for e in posted if isinstance(e, TranscriptUpdate)] == ["1 loud frames"]
    assert "no final transcript" in next(e for e in posted if isinstance(e, SttDown)).error
    await link.aclose()
    await asyncio.wait_for(task, 1)


async def test_a_vendor_that_stalls_again_after_the_reconnect_is_replaced_again() -> None:
    vendor, posted = Vendor(stalls=2), list[EngineEvent]()
    link = SttLink(vendor, posted.append, delays_s=(0.01, 0.01), sleep=Sleeps(),
                   final_timeout_s=0.05)
    task = asyncio.create_task(link.run())
    await _settle()
    link.push_audio(LOUD)
    link.finalize()
    await asyncio.sleep(0.3)
    assert len(vendor.opened) == 3  # the re-sent finalize timed out on the second too
    assert [e.text for e in posted if isinstance(e, TranscriptUpdate)] == ["1 loud frames"]
    await link.aclose()
    await asyncio.wait_for(task, 1)


async def test_words_after_an_early_finalize_outlive_its_final() -> None:
    # The engine asks for the final at the first sure pause; the caller goes on before
    # the vendor answers. That final covers the audio before the Finalize only: the words
    # after it are re-sent if the stream drops before a final covers them.
    vendor, posted = Vendor(), list[EngineEvent]()
    link = SttLink(vendor, posted.append, delays_s=(1.0,), sleep=Sleeps())
    task = asyncio.create_task(link.run())
    await _settle()
    first = vendor.opened[0]
    first.answer_later = True
    for _ in range(3):
        link.push_audio(LOUD)
    link.finalize()
    for _ in range(2):
        link.push_audio(LOUD)  # the pause was inside the sentence
    first.answer()  # "3 loud frames", from_finalize
    await _settle()
    first.emit(ProviderError("deepgram", "closed the stream: code 1011 'NET-0001'",
                             retryable=True))
    await _settle()
    link.finalize()
    await _settle()
    second = vendor.opened[1]
    assert second.audio == [LOUD] * 2
    finals = [e.text for e in posted if isinstance(e, TranscriptUpdate)]
    assert finals == ["3 loud frames", "2 loud frames"]
    assert [e for e in posted if isinstance(e, SttUp)] == [SttUp("deepgram", resent_ms=40)]
    await link.aclose()
    await asyncio.wait_for(task, 1)
