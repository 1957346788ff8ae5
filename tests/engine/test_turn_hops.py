"""The turn's hop marks (issue 13's breakdown): the answer's record carries each hop as
``hop_<name>`` ms after the caller's speech end as the VAD dated it. Manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from engine_harness import Harness

from callbridge.engine.config import Script
from callbridge.engine.events import RecordTurn, ReplyKind, StartReply, TurnRecord
from callbridge.engine.reply import run_reply
from callbridge.engine.speech import SpeechTracker
from callbridge.providers.base import LlmEvent, Message, TextDelta, ToolSpec, TranscriptUpdate


def _answers(h: Harness) -> list[TurnRecord]:
    return [
        c.turn
        for c in h.commands
        if isinstance(c, RecordTurn) and c.turn.role == "assistant" and c.turn.kind == "answer"
    ]


def test_the_speech_end_is_dated_back_over_the_quiet_frames_the_vad_called_speech() -> None:
    speech = SpeechTracker()
    for index in range(10):  # 200 ms of loud speech, arriving 20 ms apart from t = 50 s
        speech.update(True, -12.0, 20, 50.0 + index * 0.02, index * 20)
    # The caller fell quiet at 200 ms; the model says "speech" for three more frames.
    for index in range(10, 13):
        speech.update(True, -80.0, 20, 50.0 + index * 0.02, index * 20)
    assert speech.silence_at is None
    speech.update(False, -80.0, 20, 50.26, 260)  # the model's first "silence"
    assert speech.silence_seen_at == 50.26
    assert speech.silence_at is not None
    assert round((speech.silence_at - 50.0) * 1000) == 200  # back over the 60 quiet ms
    speech.update(False, -80.0, 20, 50.28, 280)  # later silent frames do not move it
    assert round((speech.silence_at - 50.0) * 1000) == 200


def test_a_speculative_answer_records_each_hop_from_the_speech_end() -> None:
    h = Harness(stt=True, speculate_ms=200, quick_endpointing_ms=300)
    h.speak(600)
    h.feed(TranscriptUpdate("what is my balance", is_final=False))
    speech_end = h.clock.now() + 0.02  # the first silent frame's arrival (an exact VAD)
    h.silence(200)  # the 10th silent frame (180 ms after the first): Finalize and the guess
    (held,) = h.starts(ReplyKind.ANSWER)
    h.answer(held, "Sure.")  # segment and audio handled at once (same clock time)
    h.silence(80)
    h.feed(TranscriptUpdate("What is my balance?", is_final=True))
    h.wait_until(lambda: h.line.audio_frames > 0)
    h.silence(2000)  # heard to the end: its record goes out
    (record,) = _answers(h)
    hops = {k: round(v) for k, v in record.latency_ms.items() if k.startswith("hop_")}
    assert hops == {
        "hop_vad_silence": 0,
        "hop_finalize": 180,
        "hop_reply_start": 180,
        "hop_first_segment": 180,
        "hop_first_audio": 180,
        "hop_final_words": 260,
        "hop_endpoint": 280,  # 300 ms of silence, counted from the first silent frame
        "hop_released": 280,
        "hop_first_frame": 280,
    }
    assert round((held.marks or {})["speech_end"], 3) == round(speech_end, 3)
    # The existing keys keep their meaning: from the endpoint.
    assert record.latency_ms["stt"] == 0.0 and record.latency_ms["first_frame"] == 0.0


def test_an_answer_after_the_final_records_the_endpoint_and_the_words() -> None:
    h = Harness(stt=True, speculate_ms=0, endpointing_ms=300, end_of_turn="off")
    h.speak(600)
    h.feed(TranscriptUpdate("check my bill", is_final=False))
    h.silence(300)  # the endpoint (15th silent frame, 280 ms after the first): Finalize
    assert not h.starts(ReplyKind.ANSWER)  # the words are owed
    h.silence(40)
    h.feed(TranscriptUpdate("check my bill", is_final=True))
    h.answer_latest("Sure.")
    h.silence(2000)
    (record,) = _answers(h)
    hops = {k: round(v) for k, v in record.latency_ms.items() if k.startswith("hop_")}
    assert hops == {
        "hop_vad_silence": 0,
        "hop_finalize": 280,
        "hop_endpoint": 280,
        "hop_reply_start": 320,
        "hop_final_words": 320,
        "hop_first_segment": 320,
        "hop_first_audio": 320,
        "hop_first_frame": 320,
    }


def test_fixed_text_has_no_hops() -> None:
    h = Harness(script=Script(first_message="Hello there."))
    h.answer_latest()
    h.silence(2000)
    greetings = [
        c.turn for c in h.commands if isinstance(c, RecordTurn) and c.turn.role == "assistant"
    ]
    assert greetings and not any(k.startswith("hop_") for k in greetings[0].latency_ms)


class _Model:
    name = "scripted"

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LlmEvent]:
        for text in ("Sure. ", "Your balance ", "is forty two dollars."):
            yield TextDelta(text)


class _Tts:
    name = "words"

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        for _ in text.split():
            yield b"\xff" * 160


async def test_the_reply_task_stamps_its_hops_once_each_in_order() -> None:
    ticks = iter(float(n) for n in range(1, 100))
    marks: dict[str, float] = {"speech_end": 0.0}
    request = StartReply(1, ReplyKind.ANSWER, messages=(Message("user", "hi"),), marks=marks)
    await run_reply(
        request, llm=_Model(), tts=_Tts(), tools=(), post=lambda e: None,
        clock=lambda: next(ticks),
    )
    # Stamped once each: later tokens, sentences and chunks leave them alone.
    assert marks == {
        "speech_end": 0.0, "llm_sent": 1.0, "first_token": 2.0, "tts_sent": 3.0, "tts_audio": 4.0
    }
