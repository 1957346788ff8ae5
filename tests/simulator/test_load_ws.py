"""The load caller's minimal WebSocket client, checked against ``websockets``' own codec."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from websockets.utils import accept_key

from callbridge.errors import TwilioProtocolError
from callbridge.simulator.leanws import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameParser,
    Handshake,
    WsFrame,
    close_frame,
    encode_frame,
)


def parse_with_websockets(data: bytes, *, mask: bool) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        assert not reader.buffer  # every byte belonged to the frame
        return frame
    raise AssertionError("websockets wanted more bytes than the frame has")


@pytest.mark.parametrize("size", [0, 125, 126, 300, 65535, 65536, 70_000])
def test_our_masked_frames_read_back_exactly_through_websockets(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = parse_with_websockets(encode_frame(payload), mask=True)
    assert (frame.opcode, frame.fin, bytes(frame.data)) == (Opcode.TEXT, True, payload)


def test_masks_differ_between_frames_and_a_given_mask_is_used() -> None:
    a, b = encode_frame(b"x" * 10), encode_frame(b"x" * 10)
    assert a[2:6] != b[2:6]
    fixed = encode_frame(b"abcd", mask=b"\x00\x00\x00\x00")
    assert fixed == b"\x81\x84\x00\x00\x00\x00abcd"


def test_close_frame_carries_the_code() -> None:
    frame = parse_with_websockets(close_frame(1000, "bye"), mask=True)
    assert frame.opcode == Opcode.CLOSE and bytes(frame.data) == b"\x03\xe8bye"


def server_bytes(*frames: Frame) -> bytes:
    return b"".join(f.serialize(mask=False) for f in frames)


def test_parser_joins_fragments_lets_pings_through_and_survives_any_split() -> None:
    data = server_bytes(
        Frame(Opcode.TEXT, b'{"event":', fin=False),
        Frame(Opcode.PING, b"p1"),
        Frame(Opcode.CONT, b'"clear"}', fin=True),
        Frame(Opcode.TEXT, b"y" * 300),
        Frame(Opcode.TEXT, b"z" * 70_000),
        Frame(Opcode.CLOSE, b"\x03\xe8"),
    )
    expected = [
        WsFrame(OP_PING, b"p1"),
        WsFrame(OP_TEXT, b'{"event":"clear"}'),
        WsFrame(OP_TEXT, b"y" * 300),
        WsFrame(OP_TEXT, b"z" * 70_000),
        WsFrame(OP_CLOSE, b"\x03\xe8"),
    ]
    assert FrameParser().feed(data) == expected
    for step in (1, 7, 1000):
        parser = FrameParser()
        got = [f for i in range(0, len(data), step) for f in parser.feed(data[i : i + step])]
        assert got == expected


@pytest.mark.parametrize(
    ("frames", "why"),
    [
        ((Frame(Opcode.CONT, b"x"),), "continuation"),
        ((Frame(Opcode.TEXT, b"a", fin=False), Frame(Opcode.TEXT, b"b")), "continuation"),
        (b"\x89\x7e\x00\x7e" + b"x" * 126, "125 bytes"),  # websockets cannot build it
        (b"\x83\x01x", "known opcode"),
        (b"\xc1\x01x", "RSV"),
    ],
)
def test_parser_refuses_broken_framing(frames: tuple[Frame, ...] | bytes, why: str) -> None:
    data = frames if isinstance(frames, bytes) else server_bytes(*frames)
    with pytest.raises(TwilioProtocolError, match=why):
        FrameParser().feed(data)


def test_parser_refuses_masked_server_frames_and_oversized_ones() -> None:
    with pytest.raises(TwilioProtocolError, match="unmasked"):
        FrameParser().feed(Frame(Opcode.TEXT, b"hi").serialize(mask=True))
    with pytest.raises(TwilioProtocolError, match="at most 100 bytes"):
        FrameParser(max_message_bytes=100).feed(server_bytes(Frame(Opcode.TEXT, b"x" * 101)))


def response(key: str, status: str = "101 Switching Protocols", **extra: str) -> bytes:
    lines = [
        f"HTTP/1.1 {status}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_handshake_request_and_accepted_response_with_trailing_frames() -> None:
    hs = Handshake("ws://127.0.0.1:8123/media?x=1", {"X-Twilio-Signature": "sig"})
    request = hs.request().decode()
    assert request.startswith("GET /media?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8123\r\n")
    assert f"Sec-WebSocket-Key: {hs.key}\r\n" in request and request.endswith("\r\n\r\n")
    assert "X-Twilio-Signature: sig\r\n" in request and "Sec-WebSocket-Version: 13" in request
    assert hs.expected_accept() == accept_key(hs.key)
    frame = server_bytes(Frame(Opcode.TEXT, b"first"))
    data = response(hs.key) + frame
    assert hs.feed(data[:10]) is None  # not whole yet
    assert hs.feed(data[10:]) == frame  # what followed the 101 is handed on


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", "HTTP 101"),
        (response("d3Jvbmcga2V5IDEyMzQ1Ng=="), "Sec-WebSocket-Accept"),
    ],
)
def test_handshake_refusals_say_what_was_expected(reply: bytes, why: str) -> None:
    hs = Handshake("ws://127.0.0.1:1/media", {})
    with pytest.raises(TwilioProtocolError, match=why):
        hs.feed(reply)


def test_handshake_refuses_an_extension_it_did_not_offer_and_a_wss_url() -> None:
    hs = Handshake("ws://127.0.0.1:1/media", {})
    with pytest.raises(TwilioProtocolError, match="no extension"):
        hs.feed(response(hs.key, **{"Sec-WebSocket-Extensions": "permessage-deflate"}))
    with pytest.raises(ValueError, match="ws://"):
        Handshake("wss://example.invalid/media", {})
