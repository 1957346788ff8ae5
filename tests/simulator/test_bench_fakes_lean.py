"""The load benchmark's lean fakes pass the plain fakes' own tests: the same production
clients, the same assertions, only the fake's socket (or HTTP server) is the lean one.

The test functions are the providers' test modules' own, collected here a second time
with the fake switched to its lean variant; and the lean OpenAI answers raw requests
with the plain one's bytes.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Iterator

import pytest
from fakes.deepgram import DeepgramSession, FakeDeepgram, _Stream
from fakes.deepgram_lean import take_quiet_audio
from fakes.elevenlabs import FakeElevenLabs
from fakes.openai_chat import FakeOpenAI
from fakes.openai_lean import LeanOpenAI
from fakes.script import Reply, ScriptedToolCall
from providers_cloud import test_deepgram as stt
from providers_cloud import test_deepgram_barge_in as stt_barge
from providers_cloud import test_elevenlabs as single
from providers_cloud import test_elevenlabs_call as multi
from providers_cloud import test_openai_llm as llm
from providers_cloud.helpers import RecordingSleep


@pytest.fixture(autouse=True)
def lean_fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(FakeElevenLabs, "lean_by_default", True)
    monkeypatch.setattr(FakeDeepgram, "lean_by_default", True)
    monkeypatch.setattr(llm, "FakeOpenAI", LeanOpenAI)  # the name its tests build
    yield


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


def test_the_fakes_really_are_lean_here() -> None:
    assert FakeElevenLabs().lean_socket and not FakeElevenLabs(lean_socket=False).lean_socket
    assert llm.FakeOpenAI is LeanOpenAI
    assert FakeDeepgram().lean_socket


# ElevenLabs stream-input: one socket a segment; errors, closes, timeouts, retries.
test_el_speaks_a_segment = single.test_speaks_a_segment_as_untouched_ulaw
test_el_segments_in_order = single.test_segments_in_order_each_on_its_own_socket
test_el_cancel_mid_segment = (
    single.test_cancel_mid_segment_closes_the_socket_and_yields_nothing_more
)
test_el_aclose = single.test_aclose_on_the_iterator_also_closes_the_socket
test_el_refused_upgrade = single.test_refused_upgrade
test_el_wrong_key = single.test_wrong_key_is_refused_and_not_echoed
test_el_close_1011 = single.test_close_1011_mid_audio_is_retryable
test_el_vendor_error = single.test_vendor_error_message_decides_retryable
test_el_malformed = single.test_malformed_message_is_skipped_and_counted
test_el_silent_vendor = single.test_a_silent_vendor_times_out_retryably
test_el_retry = single.test_retry_reopens_until_audio_flows

# ElevenLabs multi-stream-input, what the seed stack uses: one socket a call.
test_el_multi_one_socket = multi.test_every_sentence_of_a_call_rides_one_socket
test_el_multi_barge_in = multi.test_barge_in_drops_the_context_not_the_socket
test_el_multi_context_limit = multi.test_never_more_contexts_than_the_vendor_allows
test_el_multi_keep_alive = multi.test_keep_alive_holds_an_idle_socket_open
test_el_multi_dropped = multi.test_a_dropped_socket_fails_the_sentence_and_is_replaced
test_el_multi_refused_key = multi.test_a_refused_key_is_reported_not_retried
test_el_multi_never_answers = multi.test_a_context_the_vendor_never_answers_times_out_retryably
test_el_multi_silent_socket = multi.test_a_socket_silent_for_a_whole_read_timeout_is_replaced

# Deepgram live transcription on the lean socket (the quiet-audio shortcut included).
test_stt_transcribes_an_utterance_and_forwards = (
    stt.test_transcribes_an_utterance_and_forwards_ulaw_untouched
)
test_stt_provider_endpointing_marks_speech_final = (
    stt.test_provider_endpointing_marks_speech_final_and_keeps_order
)
test_stt_audio_goes_out_in_chunks = (
    stt.test_audio_goes_out_in_chunks_and_finalize_flushes_what_waits
)
test_stt_close_stream_flushes_the_audio = stt.test_close_stream_flushes_the_audio_before_it
test_stt_by_default_a_message_is = stt.test_by_default_a_message_is_two_twilio_frames
test_stt_finalize_is_written_before_push = (
    stt.test_finalize_is_written_before_push_returns_to_the_caller
)
test_stt_a_socket_that_pushes_back = (
    stt.test_a_socket_that_pushes_back_queues_drops_the_oldest_then_catches_up
)
test_stt_a_lone_frame_goes_out = stt.test_a_lone_frame_goes_out_alone_after_one_chunk_time
test_stt_no_keepalive_while_audio_flows = stt.test_no_keepalive_while_audio_flows
test_stt_finalize_without_speech_gives_an = stt.test_finalize_without_speech_gives_an_empty_final
test_stt_keepalive_flows_while_no_audio_does = stt.test_keepalive_flows_while_no_audio_does
test_stt_aclose_ends_the_event_stream_cleanly = stt.test_aclose_ends_the_event_stream_cleanly
test_stt_wrong_key_is_a_non = stt.test_wrong_key_is_a_non_retryable_error_without_the_key
test_stt_upgrade_status_decides_retryable = stt.test_upgrade_status_decides_retryable
test_stt_bad_query_parameter_is_refused = (
    stt.test_bad_query_parameter_is_refused_by_the_fake_like_deepgram
)
test_stt_close_1011_mid_stream_is_retryable = stt.test_close_1011_mid_stream_is_retryable
test_stt_close_for_bad_data_is_not_retryable = stt.test_close_for_bad_data_is_not_retryable
test_stt_malformed_json_is_logged_counted = stt.test_malformed_json_is_logged_counted_and_skipped
test_stt_retry_backs_off_then_gives = stt.test_retry_backs_off_then_gives_up_on_retryable_failures
test_stt_retry_does_not_retry_a_bad_key = stt.test_retry_does_not_retry_a_bad_key
test_stt_two_words_hold_barge_in = stt_barge.test_two_words_hold_barge_in_until_the_second_word
test_stt_one_word_clears = stt_barge.test_one_word_clears_at_the_first_word

# OpenAI chat completions (HTTP/1.1, SSE): streams, tool calls, errors, keep-alive, pool.
test_llm_text_deltas = llm.test_streams_text_deltas_in_order
test_llm_tool_calls = llm.test_assembles_fragmented_tool_calls_after_the_text
test_llm_dtmf_tools = llm.test_maps_dtmf_tool_calls_and_results_to_api_messages
test_llm_cancelled_stays_warm = (
    llm.test_a_cancelled_stream_stops_at_once_and_its_connection_stays_warm
)
test_llm_abandoned_cut = llm.test_an_abandoned_long_stream_is_cut_after_the_drain_limit
test_llm_http_errors = llm.test_http_errors_map_to_provider_errors
test_llm_wrong_key = llm.test_wrong_key_is_refused
test_llm_hung = llm.test_a_hung_server_times_out_retryably
test_llm_stall = llm.test_a_stream_that_stalls_after_some_text_times_out
test_llm_dropped = llm.test_a_dropped_connection_mid_stream_is_retryable
test_llm_error_event = llm.test_an_error_event_mid_stream_is_retryable
test_llm_retry_recovers = llm.test_retry_stream_recovers_before_the_first_token
test_llm_retry_gives_up = llm.test_retry_stream_gives_up_after_three_retries
test_llm_never_repeats = llm.test_retry_stream_never_repeats_text_already_spoken
test_llm_no_key = llm.test_compatible_server_without_key_gets_the_placeholder
test_llm_warm = llm.test_warm_opens_the_connection_the_turns_then_reuse
test_llm_failed_warm = llm.test_a_failed_warm_up_is_harmless
test_llm_malformed = llm.test_a_malformed_chunk_mid_stream_is_retryable_and_never_repeated
test_llm_error_message = llm.test_a_server_error_after_the_stream_began_keeps_its_message
test_llm_pool = llm.test_concurrent_calls_share_one_pool_and_reuse_its_connections


async def _raw_exchange(base_url: str, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """One request on a fresh socket: the status line, the headers, the de-chunked body."""
    port = int(base_url.split(":")[2].split("/")[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
        if "content-length" in headers:
            return status.encode(), headers, await reader.readexactly(
                int(headers["content-length"]))
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return status.encode(), headers, body
    finally:
        writer.close()


def _post(body: dict[str, object], key: str = "test-openai-key") -> bytes:
    data = json.dumps(body).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
            b"\r\nauthorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
            % (key.encode(), len(data), data))


@pytest.mark.parametrize(("request_bytes", "reply"), [
    (_post({"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
     Reply(text=("Sure, ", 'a "quoted" \u00e9 word.'), tool_calls=(ScriptedToolCall(
         "check_bill", {"account": "42"}, id="call_1"),))),
    (_post({"model": "gpt-4o", "stream": True, "messages": []}), Reply()),
    (_post({"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "x"}]},
           key="wrong"), Reply()),
    (b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer test-openai-key\r\n\r\n",
     Reply()),
])
async def test_lean_openai_answers_the_same_bytes_as_the_plain_one(
    request_bytes: bytes, reply: Reply
) -> None:
    answers = []
    for fake_type in (FakeOpenAI, LeanOpenAI):
        async with fake_type([reply]) as fake:
            answers.append(await _raw_exchange(fake.base_url, request_bytes))
    (status, headers, body), (lean_status, lean_headers, lean_body) = answers
    assert lean_status == status
    for name in ("content-type", "content-length", "transfer-encoding", "server"):
        assert lean_headers.get(name) == headers.get(name), name
    ids = re.compile(rb'"id": "chatcmpl-[0-9a-f]{24}", "object": "chat.completion.chunk", '
                     rb'"created": \d+')
    assert ids.sub(b"ID", lean_body) == ids.sub(b"ID", body)


class _Recorder:
    """The socket a Deepgram ``_Stream`` answers on: what it sent, in order."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    async def send(self, text: str) -> None:
        message = json.loads(text)
        message.pop("metadata", None)  # request and model ids: fresh per stream
        self.sent.append(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.sent.append(("close", code, reason))


@pytest.mark.parametrize("seed", range(8))
async def test_deepgram_quiet_audio_shortcut_leaves_the_stream_as_its_message_would(
    seed: int,
) -> None:
    """Random speech and pauses in 20/40/60 ms messages, and Finalizes: the stream that
    takes quiet audio by the shortcut sends and records exactly what the plain one does."""
    rng = random.Random(seed)
    fake = FakeDeepgram(["one two three", "four five", "six"], cycle=True,
                        interim_after_frames=rng.choice([1, 3, 10]),
                        endpointing_frames=rng.choice([None, 2, 15]))
    loud, hush = bytes([0x20, 0xA0] * 80), b"\xff" * 160
    messages: list[str | bytes] = []
    for _ in range(60):
        frames = rng.choice([loud, hush]) * rng.randint(1, 3)
        messages += [frames] * rng.randint(1, 12)
        if rng.random() < 0.15:
            messages.append('{"type": "Finalize"}')
    streams = []
    taken = 0
    for shortcut in (False, True):
        session = DeepgramSession("/v1/listen", {}, {})
        stream = _Stream(fake, _Recorder(), session)  # type: ignore[arg-type]
        for message in messages:
            if shortcut and isinstance(message, bytes) and take_quiet_audio(stream, message):
                taken += 1
            else:
                await stream.message(message)
        streams.append(stream)
    plain, lean = streams
    assert taken > len(messages) // 3  # the shortcut did most of the work
    assert lean.ws.sent == plain.ws.sent  # type: ignore[attr-defined]
    assert len(plain.ws.sent) > 3  # type: ignore[attr-defined]
    for name in ("audio", "frames", "frames_handled", "audio_messages", "messages", "controls",
                 "finals_sent"):
        assert getattr(lean.session, name) == getattr(plain.session, name), name
    for name in ("audio_s", "in_speech", "pending", "silent_frames", "speech_frames", "current"):
        assert getattr(lean, name) == getattr(plain, name), name
