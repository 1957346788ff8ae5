"""The fake providers: defaults from issue 4, blocks, determinism (no timed assertions)."""

from __future__ import annotations

import pytest

from callbridge.assistant import build_assistant, load_assistant
from callbridge.audio import levels, ulaw
from callbridge.providers.base import SttSpeechStarted, TextDelta, TranscriptUpdate
from callbridge.providers.fake import (
    DEFAULT_REPLY,
    FakeLlm,
    FakeLlmBlock,
    FakeStt,
    FakeSttBlock,
    FakeTts,
    FakeTtsBlock,
    FakeVad,
)
from callbridge.providers.registry import spec_for

from .test_scenario import EXAMPLES

TONE = ulaw.encode(levels.tone(300, 20, -20.0))
QUIET = ulaw.encode(bytes(320))


def test_defaults_match_the_issue() -> None:
    stt = FakeSttBlock.model_validate({"provider": "fake"})
    llm = FakeLlmBlock.model_validate({"provider": "fake"})
    tts = FakeTtsBlock.model_validate({"provider": "fake"})
    assert stt.final_delay_ms == 100
    assert (llm.first_token_ms, llm.chunks, llm.chunk_interval_ms) == (80, 10, 10)
    assert 55 <= len(DEFAULT_REPLY.split()) <= 65
    assert (tts.first_audio_ms, tts.ms_per_word, tts.tone_hz, tts.level_dbfs) == (
        60,
        60,
        440.0,
        -20.0,
    )


def test_blocks_take_camel_case_and_are_registered() -> None:
    block = spec_for("stt", "fake").config.model_validate(
        {"provider": "fake", "finalDelayMs": 250, "text": "hi there"}
    )
    assert isinstance(block, FakeSttBlock) and block.final_delay_ms == 250
    for kind in ("vad", "stt", "llm", "tts"):
        assert spec_for(kind, "fake").name == "fake"  # type: ignore[arg-type]


def test_example_assistant_builds_with_all_fakes() -> None:
    built = build_assistant(load_assistant(EXAMPLES.parent / "assistant-fake.yaml"), {})
    assert isinstance(built.llm, FakeLlm) and isinstance(built.tts, FakeTts)
    assert isinstance(built.stt, FakeStt) and isinstance(built.vad, FakeVad)


def test_vad_is_an_energy_threshold() -> None:
    stream = FakeVad().new_stream()
    assert stream.speech_probability(levels.tone(300, 20, -20.0)) == 1.0
    assert stream.speech_probability(levels.tone(300, 20, -60.0)) == 0.0


async def test_stt_interim_early_then_one_final_after_the_silence_delay() -> None:
    stream = await FakeStt(FakeSttBlock.model_validate({"provider": "fake"})).open_stream()
    for frame in [QUIET] * 3 + [TONE] * 10 + [QUIET] * 4:
        stream.push_audio(frame)
    got = []
    stream.push_audio(QUIET)  # the 5th silent frame: 100 ms after the speech ended
    stream.push_audio(QUIET)
    stream.finalize()  # already final: answered "nothing was said", as Deepgram does
    await stream.aclose()
    async for event in stream.events():
        got.append(event)
    assert got == [
        SttSpeechStarted(),
        TranscriptUpdate("I", is_final=False),  # 60 ms into the speech
        TranscriptUpdate("I would", is_final=False),  # a word more every 100 ms of it
        TranscriptUpdate("I would like to check my bill", is_final=True, speech_final=True),
        TranscriptUpdate("", is_final=True, from_finalize=True),
    ]


async def test_stt_interims_grow_while_the_caller_speaks_and_stop_at_the_text() -> None:
    block = FakeSttBlock.model_validate(
        {"provider": "fake", "text": "stop please", "interimAfterMs": 20, "interimEveryMs": 40}
    )
    stream = await FakeStt(block).open_stream()
    for frame in [TONE] * 3 + [QUIET] * 2 + [TONE] * 6:  # never past the text
        stream.push_audio(frame)
    await stream.aclose()
    interims = [e.text for e in [e async for e in stream.events()]
                if isinstance(e, TranscriptUpdate) and not e.is_final]
    assert interims == ["stop", "stop please"]


async def test_stt_finalize_flushes_an_utterance_in_progress() -> None:
    block = FakeSttBlock.model_validate({"provider": "fake", "text": "yes"})
    stream = await FakeStt(block).open_stream()
    for frame in [TONE] * 5 + [QUIET] * 2:
        stream.push_audio(frame)
    stream.finalize()
    for frame in [TONE] * 2:  # a second utterance starts
        stream.push_audio(frame)
    await stream.aclose()
    events = [e async for e in stream.events()]
    finals = [e for e in events if isinstance(e, TranscriptUpdate) and e.is_final]
    assert finals == [
        TranscriptUpdate("yes", is_final=True, speech_final=True, from_finalize=True),
    ]
    assert events.count(SttSpeechStarted()) == 2


async def test_llm_streams_the_reply_in_ten_pieces() -> None:
    llm = FakeLlm(FakeLlmBlock.model_validate({"provider": "fake", "firstTokenMs": 0}))
    pieces = [e async for e in llm.stream([], [])]
    assert len(pieces) == 10 and all(isinstance(p, TextDelta) for p in pieces)
    assert "".join(p.text for p in pieces if isinstance(p, TextDelta)) == " ".join(
        DEFAULT_REPLY.split()
    )


@pytest.mark.parametrize(("text", "chunks"), [("one two three", 10), ("a b c d e f g", 3)])
async def test_llm_split_keeps_every_word(text: str, chunks: int) -> None:
    block = FakeLlmBlock.model_validate(
        {"provider": "fake", "reply": text, "chunks": chunks, "firstTokenMs": 0}
    )
    pieces = [e.text async for e in FakeLlm(block).stream([], []) if isinstance(e, TextDelta)]
    assert "".join(pieces) == text and len(pieces) == min(chunks, len(text.split()))


async def test_tts_gives_60_ms_of_tone_per_word_in_20_ms_chunks() -> None:
    tts = FakeTts(FakeTtsBlock.model_validate({"provider": "fake", "firstAudioMs": 0}))
    chunks = [c async for c in tts.synthesize("Sure, let me check that.")]
    assert [len(c) for c in chunks] == [160] * 15  # 5 words × 60 ms
    level = levels.rms_dbfs(ulaw.decode(b"".join(chunks)))
    assert level == pytest.approx(-20.0, abs=0.5)
    assert chunks == [c async for c in tts.synthesize("Sure, let me check that.")]
