"""The Media Streams codec: plain data in, typed events out; no event loop."""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import twilio_stream as tw

from callbridge.errors import TwilioProtocolError
from callbridge.twilio import codec

STREAM = "MZ" + "1" * 32
CALL = "CA" + "2" * 32


def test_decodes_twilios_messages_into_typed_events() -> None:
    assert codec.decode(tw.connected()) == codec.Connected("Call", "1.0.0")

    start = codec.decode(tw.start(STREAM, CALL, {"token": "t", "from": "+1555"}, seq=1))
    assert isinstance(start, codec.Start)
    assert (start.stream_sid, start.call_sid, start.account_sid) == (STREAM, CALL, tw.ACCOUNT_SID)
    assert start.tracks == ("inbound",)
    assert start.media_format == codec.MediaFormat("audio/x-mulaw", 8000, 1)
    assert dict(start.custom_parameters) == {"token": "t", "from": "+1555"}
    assert start.sequence_number == 1

    audio = bytes(range(160))
    media = codec.decode(tw.media(STREAM, audio, seq=3, chunk=2, timestamp_ms=20))
    assert media == codec.Media(STREAM, "inbound", 2, 20, audio, 3)

    assert codec.decode(tw.dtmf(STREAM, "7", seq=5)) == codec.Dtmf(STREAM, "inbound_track", "7", 5)
    assert codec.decode(tw.mark(STREAM, "seg-7", seq=4)) == codec.Mark(STREAM, "seg-7", 4)
    assert codec.decode(tw.stop(STREAM, CALL, seq=9)) == codec.Stop(STREAM, tw.ACCOUNT_SID, CALL, 9)


def test_events_are_frozen() -> None:
    event = codec.decode(tw.mark(STREAM, "a", seq=1))
    with pytest.raises(AttributeError):
        event.name = "b"  # type: ignore[misc, union-attr]
    start = codec.decode(tw.start(STREAM, CALL, {"token": "t"}))
    assert isinstance(start, codec.Start)
    with pytest.raises(TypeError):
        start.custom_parameters["token"] = "forged"  # type: ignore[index]


def test_unknown_event_is_returned_not_dropped() -> None:
    event = codec.decode('{"event": "transcription", "streamSid": "MZ1", "x": 1}')
    assert isinstance(event, codec.Unknown)
    assert event.event == "transcription"
    assert event.raw["x"] == 1


def test_builders_make_twilios_outbound_shapes() -> None:
    audio = b"\xff\x7f\x00" * 53
    assert json.loads(codec.media(STREAM, audio)) == {
        "event": "media",
        "streamSid": STREAM,
        "media": {"payload": base64.b64encode(audio).decode()},
    }
    assert json.loads(codec.mark(STREAM, "seg-1")) == {
        "event": "mark",
        "streamSid": STREAM,
        "mark": {"name": "seg-1"},
    }
    assert json.loads(codec.clear(STREAM)) == {"event": "clear", "streamSid": STREAM}


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("{not json", "json", "expected a JSON object, got invalid JSON"),
        ("[1, 2]", "type", "expected a JSON object, got array"),
        ('{"streamSid": "MZ1"}', "type", "expected event as a string, got nothing"),
        ('{"event": 5}', "type", "expected event as a string, got number"),
        (
            '{"event": "media", "streamSid": "MZ1"}',
            "type",
            "expected media as an object, got nothing",
        ),
        (
            '{"event":"media","streamSid":"MZ1","media":{"timestamp":"5","payload":"!!!"}}',
            "base64",
            "expected media.payload as base64",
        ),
        (
            '{"event":"media","streamSid":"MZ1","media":{"timestamp":5.5,"payload":""}}',
            "type",
            "expected media.timestamp as a string of digits, got number",
        ),
        (
            '{"event":"media","streamSid":"MZ1","media":{"timestamp":"-4","payload":""}}',
            "type",
            "expected media.timestamp as a string of digits, got string '-4'",
        ),
        (
            '{"event":"mark","streamSid":"MZ1","mark":{"name":null}}',
            "type",
            "expected mark.name as a string, got null",
        ),
        (
            '{"event":"dtmf","streamSid":"MZ1","dtmf":[]}',
            "type",
            "expected dtmf as an object, got array",
        ),
        (
            '{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1","tracks":"inbound",'
            '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}',
            "type",
            "expected start.tracks as a list of strings",
        ),
        (
            '{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1","customParameters":{"a":1},'
            '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}',
            "type",
            "expected start.customParameters as an object of strings",
        ),
        (
            '{"event":"mark","streamSid":"MZ1","sequenceNumber":true,"mark":{"name":"a"}}',
            "type",
            "got boolean",
        ),
        ("[" * 50_000 + "]" * 10, "json", "invalid JSON"),
    ],
)
def test_malformed_frames_say_what_was_expected(text: str, kind: str, message: str) -> None:
    with pytest.raises(codec.MalformedFrame) as err:
        codec.decode(text)
    assert err.value.kind == kind
    assert message in str(err.value)
    assert isinstance(err.value, TwilioProtocolError)


def test_oversize_frame_is_refused_before_parsing() -> None:
    payload = base64.b64encode(b"\xff" * 50_000).decode()
    text = tw.media(STREAM, b"", seq=1, chunk=1, timestamp_ms=0).replace(
        '"payload": ""', f'"payload": "{payload}"'
    )
    assert len(text) > codec.MAX_FRAME_BYTES
    with pytest.raises(codec.MalformedFrame) as err:
        codec.decode(text)
    assert err.value.kind == "size"
    # Multi-byte characters count as the bytes they take on the wire.
    wide = '{"event":"x","pad":"' + "€" * (codec.MAX_FRAME_BYTES // 3 + 1) + '"}'
    assert len(wide) < codec.MAX_FRAME_BYTES
    with pytest.raises(codec.MalformedFrame):
        codec.decode(wide)


def test_codec_module_does_no_io() -> None:
    tree = ast.parse(Path(codec.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"asyncio", "socket", "websockets", "starlette", "fastapi", "uvicorn"}


# --- property-based: nothing but events or TwilioProtocolError comes out -------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _decode_or_protocol_error(text: str | bytes) -> None:
    try:
        event = codec.decode(text)
    except TwilioProtocolError:
        return
    assert isinstance(
        event,
        codec.Connected
        | codec.Start
        | codec.Media
        | codec.Mark
        | codec.Dtmf
        | codec.Stop
        | codec.Unknown,
    )


@given(st.text(max_size=300))
def test_any_text_decodes_or_raises_protocol_error(text: str) -> None:
    _decode_or_protocol_error(text)


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    _decode_or_protocol_error(data)


def _valid_messages() -> list[dict[str, Any]]:
    return [
        json.loads(m)
        for m in (
            tw.connected(),
            tw.start(STREAM, CALL, {"token": "t"}),
            tw.media(STREAM, b"\x01" * 160, seq=2, chunk=1, timestamp_ms=0),
            tw.dtmf(STREAM, "1", seq=3),
            tw.mark(STREAM, "m", seq=4),
            tw.stop(STREAM, CALL, seq=5),
        )
    ]


def _paths(obj: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    return out


@given(st.data())
@settings(max_examples=300)
def test_valid_messages_with_one_field_replaced_never_crash(data: st.DataObject) -> None:
    msg = data.draw(st.sampled_from(_valid_messages()))
    path = data.draw(st.sampled_from(_paths(msg)))
    value = data.draw(json_values)
    target = msg
    for key in path[:-1]:
        target = target[key]
    if data.draw(st.booleans()):
        target[path[-1]] = value
    else:
        del target[path[-1]]
    _decode_or_protocol_error(json.dumps(msg))


@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=10**12))
def test_media_payload_round_trips(audio: bytes, timestamp_ms: int) -> None:
    event = codec.decode(tw.media(STREAM, audio, seq=1, chunk=1, timestamp_ms=timestamp_ms))
    assert isinstance(event, codec.Media)
    assert event.ulaw == audio
    assert event.timestamp_ms == timestamp_ms
    outbound = json.loads(codec.media(STREAM, audio))
    assert base64.b64decode(outbound["media"]["payload"]) == audio


def _strict(text: str) -> codec.Inbound:
    """The JSON reader alone: a space before the text keeps the fast path out."""
    return codec.decode(" " + text)


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(0, 10**18 - 1),
    chunk=st.integers(0, 10**18 - 1),
    timestamp_ms=st.integers(0, 10**18 - 1),
    audio=st.binary(max_size=400),
    track=st.sampled_from(["inbound", "outbound", "inbound_track"]),
    sid=st.from_regex(r"[A-Za-z0-9]{1,64}", fullmatch=True),
)
def test_the_media_fast_path_reads_exactly_what_the_strict_reader_reads(
    seq: int, chunk: int, timestamp_ms: int, audio: bytes, track: str, sid: str
) -> None:
    payload = base64.b64encode(audio).decode("ascii")
    text = (
        f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"{track}",'
        f'"chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":"{payload}"}},'
        f'"streamSid":"{sid}"}}'
    )
    assert codec._fast_media(text) is not None  # Twilio's own shape takes the fast path
    assert codec.decode(text) == _strict(text)


@pytest.mark.parametrize(
    "text",
    [
        # not base64 (bad padding): the strict reader's error, not a fast-path guess
        '{"event":"media","sequenceNumber":"1","media":{"track":"inbound","chunk":"1",'
        '"timestamp":"0","payload":"AAA"},"streamSid":"MZ1"}',
        # a key twice: JSON's last-one-wins, as before
        '{"event":"media","sequenceNumber":"1","media":{"track":"inbound","chunk":"1",'
        '"timestamp":"0","payload":"AAAA"},"streamSid":"MZ1","streamSid":"MZ2"}',
        # a trailing newline, unicode digits, an escaped sid: all outside the fixed shape
        '{"event":"media","sequenceNumber":"1","media":{"track":"inbound","chunk":"1",'
        '"timestamp":"0","payload":"AAAA"},"streamSid":"MZ1"}\n',
        '{"event":"media","sequenceNumber":"\u0661","media":{"track":"inbound","chunk":"1",'
        '"timestamp":"0","payload":"AAAA"},"streamSid":"MZ1"}',
        '{"event":"media","sequenceNumber":"1","media":{"track":"inbound","chunk":"1",'
        '"timestamp":"0","payload":"AAAA"},"streamSid":"MZ\\u0031"}',
    ],
)
def test_frames_off_the_fixed_shape_get_the_strict_readers_answer(text: str) -> None:
    assert codec._fast_media(text) is None
    try:
        expected: object = _strict(text)
    except codec.MalformedFrame as exc:
        with pytest.raises(codec.MalformedFrame) as raised:
            codec.decode(text)
        assert (raised.value.kind, str(raised.value)) == (exc.kind, str(exc))
    else:
        assert codec.decode(text) == expected


def test_outbound_media_from_the_stream_prefix_is_the_json_message() -> None:
    audio = bytes(range(160))
    message = json.loads(codec.media(STREAM, audio))
    assert message == {
        "event": "media",
        "streamSid": STREAM,
        "media": {"payload": base64.b64encode(audio).decode("ascii")},
    }


def _twilio_media(
    seq: int, chunk: int, timestamp_ms: int, audio: bytes, track: str, sid: str
) -> str:
    payload = base64.b64encode(audio).decode("ascii")
    return (
        f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"{track}",'
        f'"chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":"{payload}"}},'
        f'"streamSid":"{sid}"}}'
    )


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(0, 10**18 - 1),
    timestamp_ms=st.integers(0, 10**18 - 1),
    audio=st.binary(max_size=400),
    sid=st.from_regex(r"[A-Za-z0-9]{1,64}", fullmatch=True),
)
def test_the_live_media_reader_takes_twilios_shape_as_decode_reads_it(
    seq: int, timestamp_ms: int, audio: bytes, sid: str
) -> None:
    text = _twilio_media(seq, seq, timestamp_ms, audio, "inbound", sid)
    event = codec.decode(text)
    assert isinstance(event, codec.Media)
    assert codec.media_audio(text.encode()) == (event.timestamp_ms, event.ulaw)


FRAME = _twilio_media(7, 6, 120, bytes(range(160)), "inbound", "MZ" + "a" * 32).encode()


@settings(max_examples=1000, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(FRAME)), st.binary(max_size=3), st.integers(0, 3)), max_size=3
    )
)
def test_the_live_media_reader_never_reads_a_frame_otherwise_than_decode(
    edits: list[tuple[int, bytes, int]],
) -> None:
    """Bytes changed, cut or added anywhere: the reader answers only what ``decode``
    (the strict reader) reads from the same frame, or leaves it to ``decode``."""
    frame = FRAME
    for at, insert, cut in edits:
        frame = frame[:at] + insert + frame[at + cut :]
    fast = codec.media_audio(frame)
    if fast is None:
        return
    event = codec.decode(frame.decode())
    assert isinstance(event, codec.Media)
    assert fast == (event.timestamp_ms, event.ulaw)


@pytest.mark.parametrize(
    "payload",
    ["AAA", "AA=A", "=AAA", "AAAA====", "AAAA=", "AA\\u0041A", "AA AA", "AA\nAA", "Zg=", "Zm9v!"],
)
def test_an_odd_payload_is_read_as_decode_reads_it_or_left_to_it(payload: str) -> None:
    frame = FRAME.replace(base64.b64encode(bytes(range(160))), payload.encode())
    fast = codec.media_audio(frame)
    try:
        event = codec.decode(frame.decode())
    except codec.MalformedFrame as exc:
        assert exc.kind in ("base64", "json")
        assert fast is None
    else:
        assert isinstance(event, codec.Media)
        assert fast is None or fast == (event.timestamp_ms, event.ulaw)
