"""``interruptMinWords`` with Deepgram's live interim stream (issue 10, item 4).

The caller talks over the bot. Each 20 ms frame goes to the engine (manual clock, an
exact energy VAD) and through the production Deepgram client to the fake, which answers
the way Deepgram streams interims: empty transcripts until it has recognised a word, then
one more word at a time. Every result is fed back to the engine before the next frame, so
the frame at which ``clear`` is sent is exact.
"""

from __future__ import annotations

import asyncio

import pytest
from engine.engine_harness import SPEECH, Harness
from fakes.deepgram import FakeDeepgram

from callbridge.engine.config import Script
from callbridge.engine.events import SendClear
from callbridge.providers.base import TranscriptUpdate
from callbridge.providers.stt.deepgram import DeepgramConfig, DeepgramSTT, listen_url

from .helpers import wait_for

GREETING = " ".join(["Thanks for calling Acme, let me tell you about our offers."] * 4)
INTERIM_EVERY = 5  # an interim every 100 ms of speech
FIRST_WORD = 20  # frames of speech (400 ms) before Deepgram has recognised a word
WORDS_PER_S = 3.5  # 1 word at 400 and 500 ms, 2 at 600 ms
SECOND_WORD = 30


def _speaking_bot(min_words: int, *, stt: bool) -> Harness:
    harness = Harness(stt=stt, script=Script(first_message=GREETING),
                      interrupt_min_words=min_words)
    harness.answer_latest()  # the greeting is playing: speech now is judged as barge-in
    return harness


async def _clear_frame_with_deepgram(min_words: int) -> tuple[int, list[str]]:
    """The caller's frame (1-based) at which the engine sent ``clear``, and the interim
    transcripts it had been given by then."""
    harness = _speaking_bot(min_words, stt=True)
    interims: list[str] = []
    async with FakeDeepgram(
        ["wait stop please"], interim_every_frames=INTERIM_EVERY,
        first_word_s=FIRST_WORD * 0.02, words_per_s=WORDS_PER_S,
    ) as fake:
        config = DeepgramConfig()
        stt = DeepgramSTT(config, api_key=fake.api_key, url=listen_url(config, fake.base_url))
        stream = await stt.open_stream()
        events = stream.events()
        session = fake.sessions[0]
        consumed = 0
        try:
            for frame in range(1, 80):
                harness.frame(True)  # the engine hears the frame first (VAD), as on a call
                if harness.count(SendClear):
                    return frame, interims
                stream.push_audio(SPEECH)
                await wait_for(lambda n=frame: session.frames_handled >= n)
                while consumed < len(session.sent):  # Deepgram's answers to this frame
                    try:
                        async with asyncio.timeout(2):
                            event = await anext(events)
                    except TimeoutError:
                        raise AssertionError(
                            f"the client never delivered {session.sent[consumed]}"
                        ) from None
                    consumed += 1
                    if isinstance(event, TranscriptUpdate) and not event.is_final:
                        interims.append(event.text)
                    harness.feed(event)
        finally:
            await stream.aclose()
    raise AssertionError(f"no barge-in; interims {interims}")


async def test_two_words_hold_barge_in_until_the_second_word() -> None:
    frame, interims = await _clear_frame_with_deepgram(2)
    # Empty interims first (Deepgram heard audio, no words yet), then one word, then two.
    assert interims[:3] == ["", "", ""] and interims[-1] == "wait stop"
    assert interims.count("wait") == 2
    assert frame == SECOND_WORD + 1  # the frame after "wait stop" arrived


async def test_one_word_clears_at_the_first_word() -> None:
    frame, interims = await _clear_frame_with_deepgram(1)
    assert interims == ["", "", "", "wait"]
    assert frame == FIRST_WORD + 1  # not at 200 ms of VAD speech: the interims were empty


@pytest.mark.parametrize("min_words", [1, 2])
def test_without_stt_barge_in_is_the_vads(min_words: int) -> None:
    harness = _speaking_bot(min_words, stt=False)
    frames = harness.wait_until(lambda: harness.count(SendClear) > 0, max_ms=2000, speech=True)
    assert frames == harness.engine.turns.interrupt_min_ms  # 200 ms of speech, no words asked


def test_two_words_wait_even_before_the_first_interim_of_the_speech() -> None:
    """A transcriber that streams interims but has not answered this speech yet is no
    licence to cut the bot off: with two words asked for, the gate waits for them."""
    harness = _speaking_bot(2, stt=True)
    harness.feed(TranscriptUpdate("", is_final=False))  # earlier in the call: it streams
    harness.speak(400)
    assert harness.count(SendClear) == 0
    harness.feed(TranscriptUpdate("hold on", is_final=False))
    harness.frame(True)
    assert harness.count(SendClear) == 1


def test_a_finals_only_transcriber_leaves_barge_in_to_the_vad() -> None:
    """The OpenAI-compatible transcriber sends words only after the turn: waiting for
    interim words would mean never interrupting."""
    harness = _speaking_bot(2, stt=True)
    harness.feed(TranscriptUpdate("earlier words", is_final=True))
    frames = harness.wait_until(lambda: harness.count(SendClear) > 0, max_ms=2000, speech=True)
    assert frames == harness.engine.turns.interrupt_min_ms
