"""The load benchmark's lean fakes pass the plain fakes' own tests: the same production
clients, the same assertions, only the fake's socket (or HTTP server) is the lean one.

The test functions are the providers' test modules' own, collected here a second time
with the fake switched to its lean variant by default.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes.elevenlabs import FakeElevenLabs
from providers_cloud import test_elevenlabs as single
from providers_cloud import test_elevenlabs_call as multi
from providers_cloud.helpers import RecordingSleep


@pytest.fixture(autouse=True)
def lean_fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(FakeElevenLabs, "lean_by_default", True)
    yield


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


def test_the_fakes_really_are_lean_here() -> None:
    assert FakeElevenLabs().lean_socket and not FakeElevenLabs(lean_socket=False).lean_socket


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
