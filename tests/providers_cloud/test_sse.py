"""The SSE decoder against the HTML standard's event-stream rules (§9.2.6), fed whole
and in every possible split, since the network may cut the bytes anywhere."""

from __future__ import annotations

import pytest

from callbridge.providers.llm.sse import ServerSentEvent, SseDecoder


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SseDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def every_split(stream: bytes) -> list[list[ServerSentEvent]]:
    """The events for the stream whole, cut once anywhere, and fed a byte at a time."""
    results = [decode(stream), decode(*(stream[i : i + 1] for i in range(len(stream))))]
    results += [decode(stream[:cut], stream[cut:]) for cut in range(1, len(stream))]
    return results


CASES = [
    pytest.param(b'data: {"a":1}\n\ndata: [DONE]\n\n',
                 [ServerSentEvent('{"a":1}'), ServerSentEvent("[DONE]")], id="openai"),
    pytest.param(b"data: a\r\n\r\ndata: b\r\n\r\n",
                 [ServerSentEvent("a"), ServerSentEvent("b")], id="crlf"),
    pytest.param(b"data: a\r\rdata: b\r\r", [ServerSentEvent("a"), ServerSentEvent("b")],
                 id="cr-only"),
    pytest.param(b"data: a\r\n\ndata: b\n\r\n", [ServerSentEvent("a"), ServerSentEvent("b")],
                 id="mixed-endings"),
    pytest.param(b": keep-alive\n\ndata: x\n: a comment inside\n\n", [ServerSentEvent("x")],
                 id="comments"),
    pytest.param(b"data: line one\ndata: line two\ndata\n\n",
                 [ServerSentEvent("line one\nline two\n")], id="multi-line-data"),
    pytest.param(b"data:no space\ndata:  two spaces\n\n",
                 [ServerSentEvent("no space\n two spaces")], id="one-leading-space-only"),
    pytest.param(b"event: content_block_delta\ndata: {}\n\ndata: plain\n\n",
                 [ServerSentEvent("{}", "content_block_delta"), ServerSentEvent("plain")],
                 id="event-type-resets"),
    pytest.param(b"event: ping\n\ndata: after\n\n", [ServerSentEvent("after")],
                 id="no-data-no-event"),
    pytest.param(b"data\n\n", [ServerSentEvent("")], id="empty-data-is-an-event"),
    pytest.param(b"id: 7\ndata: a\n\ndata: b\n\nid: x\x00y\ndata: c\n\n",
                 [ServerSentEvent("a", id="7"), ServerSentEvent("b", id="7"),
                  ServerSentEvent("c", id="7")], id="id-persists-nul-ignored"),
    pytest.param(b"\xef\xbb\xbfdata: bom\n\n", [ServerSentEvent("bom")], id="bom"),
    pytest.param("data: héllo ✓ 日本\n\n".encode(), [ServerSentEvent("héllo ✓ 日本")],
                 id="utf-8-split-anywhere"),
    pytest.param(b"data: whole\n\ndata: cut off at the end\n", [ServerSentEvent("whole")],
                 id="incomplete-event-discarded"),
    pytest.param(b"dat: x\ndata: y\nretry: 300\n\n", [ServerSentEvent("y")],
                 id="unknown-fields-ignored"),
]


@pytest.mark.parametrize(("stream", "expected"), CASES)
def test_events_are_the_same_however_the_bytes_are_cut(
    stream: bytes, expected: list[ServerSentEvent]
) -> None:
    for events in every_split(stream):
        assert events == expected


def test_retry_is_read_and_a_bom_only_counts_at_the_start() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"retry: 1500\ndata: \xef\xbb\xbfx\n\n") == [ServerSentEvent("\ufeffx")]
    assert decoder.retry_ms == 1500


def test_invalid_utf_8_is_replaced_not_raised() -> None:
    assert decode(b"data: \xff\xfe ok\n\n") == [ServerSentEvent("\ufffd\ufffd ok")]


@pytest.mark.parametrize("chunk", [
    b'data: {"a":1}\n\ndata: {"b":2}\n\n',  # the quick way: whole one-line data events
    b"data: a\ndata: b\n\n",  # two data lines: one event, line by line
    b"data: a\n\nevent: x\ndata: b\n\n",
    b"data: a\n\n\n\ndata: b\n\n",  # a blank line too many
    b"data:a\n\n",  # no space after the colon
    b": ping\n\ndata: a\n\n",
    "data: é ✓\n\n".encode(),
])
@pytest.mark.parametrize("before", [b"data: first\n\n", b"id: 9\ndata: first\n\n", b"data: x\n"])
def test_a_chunk_of_whole_events_reads_as_line_by_line(before: bytes, chunk: bytes) -> None:
    """After the stream has started: the same events, ids and all, as a byte at a time."""
    stream = before + chunk
    assert decode(before, chunk) == decode(*(stream[i : i + 1] for i in range(len(stream))))
