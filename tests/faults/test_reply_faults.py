"""Model and voice faults on the seed stack: OpenAI answering 429/500 or stalling past its
timeout, its stream cut after the first words, ElevenLabs closing 1011 mid-sentence or
sending audio that is not base64. Repairable ones are heard as the answer (and the
caller waits no longer than the hold delay in silence); the rest as an apology and a
clean REST hang-up, with the provider in the record."""

from __future__ import annotations

from pathlib import Path

from fakes.script import Reply

from callbridge.simulator.caller import LiveCall
from faults.chaos import Cut, HttpError, Stall, WsClose, WsGarbage
from faults.expect import (
    ANSWERED,
    BILL,
    HANGS_UP,
    assert_apologised,
    assert_clean,
    bot_speaking_for,
)
from faults.stack import seed_stack

TEXT = "Sure, your last bill was forty two dollars, and it was paid on the third."
ANSWER = Reply(text=("Sure, your last bill was forty two ", "dollars, and it was ",
                     "paid on the third."))
RATE_LIMITED = HttpError(429, '{"error": {"message": "Rate limit reached", '
                              '"type": "requests", "code": "rate_limit_exceeded"}}')
SERVER_ERROR = HttpError(500, '{"error": {"message": "The server had an error", '
                              '"type": "server_error"}}')


async def test_openai_429_is_retried_and_the_caller_hears_the_answer(tmp_path: Path) -> None:
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER],
                          llm_plans=[RATE_LIMITED, RATE_LIMITED]) as stack:
        outcome = await stack.call(ANSWERED)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert outcome.kinds_heard() == ["tone", "tone"], outcome.heard
    assert [e["provider"] for e in outcome.events("provider_retry")] == ["openai"] * 2
    assert outcome.turns()[-1]["text"] == TEXT


async def test_openai_failing_every_retry_apologises_and_hangs_up(tmp_path: Path) -> None:
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER],
                          llm_plans=[SERVER_ERROR] * 8) as stack:
        outcome = await stack.call(HANGS_UP)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert_apologised(outcome, "openai")
    assert stack.llm.connections == 4
    assert "500" in outcome.events("provider_failed")[0]["error"]


async def test_openai_stalling_gets_a_hold_line_then_the_answer(tmp_path: Path) -> None:
    # Two stalls past the model's 1 s timeout: the caller would wait over 2 s in silence.
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER],
                          llm_plans=[Stall(), Stall()],
                          faults={"retryDelaysS": [0.05, 0.1, 0.2], "holdAfterS": 1.0}
                          ) as stack:
        outcome = await stack.call(ANSWERED)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    # Heard: the greeting, "one moment" in the fallback voice, then the answer. A slow
    # machine may stretch the wait past a second hold delay: twice is the most per turn.
    kinds = outcome.kinds_heard()
    assert kinds[0] == "tone" and kinds[-1] == "tone", outcome.heard
    assert kinds[1:-1] in (["speech"], ["speech", "speech"]), outcome.heard
    holds = outcome.events("hold")
    assert 1 <= len(holds) <= 2
    assert "timed out" in outcome.events("provider_retry")[0]["error"]
    answer = outcome.turns()[-1]["text"]
    assert answer.startswith("One moment, please. ") and answer.endswith(TEXT)
    assert answer.count("One moment, please.") == len(holds)


async def test_openai_cut_after_its_first_words_is_resumed_not_repeated(tmp_path: Path) -> None:
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER],
                          llm_plans=[Cut(after_down_bytes=700)]) as stack:
        outcome = await stack.call(ANSWERED)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert len(stack.openai.requests) == 2  # asked once more, the first words not repeated
    assert outcome.turns()[-1]["text"] == TEXT
    spoken = "".join(s.text for s in stack.elevenlabs.sessions[-1:])
    assert spoken.count("forty two") <= 1
    assert outcome.kinds_heard() == ["tone", "tone"], outcome.heard


async def test_elevenlabs_closing_1011_mid_sentence_plays_the_rest_once(tmp_path: Path) -> None:
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER],
                          elevenlabs={"chunk_delay_s": 0.05}) as stack:

        async def drop_mid_sentence(call: LiveCall) -> None:
            await bot_speaking_for(call, 600)
            assert await stack.tts.strike(WsClose(1011, "internal error")) >= 1

        outcome = await stack.call(ANSWERED, during=drop_mid_sentence)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert outcome.kinds_heard() == ["tone", "tone"], outcome.heard
    # The whole sentence once: its length in the fake's voice, not more, not less.
    answer_s = outcome.heard[-1].seconds
    assert abs(answer_s - len(TEXT) * 0.03) < 0.35, answer_s
    assert outcome.report.underruns <= 1  # at most the one re-synthesis gap


async def test_elevenlabs_garbage_audio_twice_apologises(tmp_path: Path) -> None:
    # On the call's one socket, the bad audio belongs to the sentence being spoken.
    garbage = WsGarbage(text='{"audio": "%%not-base64%%", "isFinal": null}', newest_context=True)
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER],
                          elevenlabs={"chunk_delay_s": 0.05}) as stack:

        async def corrupt_every_stream(call: LiveCall) -> None:
            await bot_speaking_for(call, 300)
            await stack.tts.strike(garbage)
            await bot_speaking_for(call, 500)
            await stack.tts.strike(garbage)

        outcome = await stack.call(HANGS_UP, during=corrupt_every_stream)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert_apologised(outcome, "11labs")
    assert "base64" in outcome.events("provider_failed")[0]["error"]
    # On record: the answer, cut short (what had been said of it), then the apology.
    cut = outcome.turns()[-2]
    assert cut["kind"] == "answer" and cut["interrupted"] and cut["text"] == TEXT


async def test_elevenlabs_stalling_mid_sentence_holds_the_line_then_finishes(
    tmp_path: Path,
) -> None:
    # The voice goes quiet mid-sentence for its whole 2.5 s read timeout: the caller
    # hears "one moment" 1 s into the silence, then the rest of the sentence.
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER],
                          elevenlabs={"chunk_delay_s": 0.05},
                          faults={"retryDelaysS": [0.05, 0.1, 0.2], "holdAfterS": 1.0},
                          assistant={"voice": {"readTimeoutS": 2.5}}) as stack:

        async def stall_mid_sentence(call: LiveCall) -> None:
            await bot_speaking_for(call, 300)
            await stack.tts.strike(Stall())

        outcome = await stack.call(ANSWERED, during=stall_mid_sentence)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert outcome.kinds_heard() == ["tone", "tone", "speech", "tone"], outcome.heard
    gap = outcome.heard[2].start_s - outcome.heard[1].end_s
    assert 0.8 < gap < 1.5, gap  # the silence was bounded by the hold delay
    assert outcome.events("hold")
    told = outcome.heard[1].seconds + outcome.heard[3].seconds
    assert abs(told - len(TEXT) * 0.03) < 0.4, told  # the sentence once, whole
