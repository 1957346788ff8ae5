"""Twilio Media Streams wire format: JSON text ⇄ typed events, with no I/O.

How it works: ``decode`` turns one inbound text frame into one event or raises
``MalformedFrame`` saying what was expected and what arrived; an event name we do not
know becomes ``Unknown`` (the caller counts and logs it, nothing is dropped silently).
The builders make the three messages we send. The socket adapter only moves strings, so
plain data tests all of this (Telnyx and Fonoster speak the same events).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from callbridge.errors import TwilioProtocolError

__all__ = [
    "MAX_FRAME_BYTES",
    "Connected",
    "Dtmf",
    "Inbound",
    "MalformedFrame",
    "Mark",
    "Media",
    "MediaFormat",
    "Start",
    "Stop",
    "Unknown",
    "clear",
    "decode",
    "mark",
    "media",
    "media_audio",
]

MAX_FRAME_BYTES = 64 * 1024
"""A 20 ms frame is ~300 bytes of JSON; anything this big is not Twilio."""

_EMPTY: Mapping[str, str] = MappingProxyType({})


class MalformedFrame(TwilioProtocolError):
    """A frame we cannot read. ``kind`` is a short counter name: json, type, base64, size."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str
    sample_rate_hz: int
    channels: int


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    media_format: MediaFormat
    custom_parameters: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Media:
    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    ulaw: bytes
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Mark:
    stream_sid: str
    name: str
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Dtmf:
    stream_sid: str
    track: str
    digit: str
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    stream_sid: str
    account_sid: str = ""
    call_sid: str = ""
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Unknown:
    event: str
    raw: Mapping[str, Any]


Inbound = Connected | Start | Media | Mark | Dtmf | Stop | Unknown


def decode(text: str | bytes) -> Inbound:
    """Parse one inbound frame. Raises ``MalformedFrame`` (a ``TwilioProtocolError``).

    Fifty ``media`` frames a second per call are almost all of the traffic, and Twilio
    writes them in one fixed shape: those are read by one regular expression
    (``_fast_media``); anything else, or anything that shape does not match exactly,
    goes through the strict JSON reader below, which gives the same event or the error.
    """
    if isinstance(text, str):
        fast = _fast_media(text)
        if fast is not None:
            return fast
    size = _size(text)
    if size > MAX_FRAME_BYTES:
        raise MalformedFrame(
            "size", f"expected a frame of at most {MAX_FRAME_BYTES} bytes, got {size}"
        )
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedFrame("json", f"expected a JSON object, got invalid JSON ({exc})") from exc
    if not isinstance(msg, dict):
        raise MalformedFrame("type", f"expected a JSON object, got {_kind(msg)}")
    event = _str(msg, "event")
    match event:
        case "media":
            return _media(msg)
        case "mark":
            body = _obj(msg, "mark")
            return Mark(_str(msg, "streamSid"), _str(body, "name", "mark."), _seq(msg))
        case "dtmf":
            body = _obj(msg, "dtmf")
            return Dtmf(
                _str(msg, "streamSid"),
                _str(body, "track", "dtmf.", default=""),
                _str(body, "digit", "dtmf."),
                _seq(msg),
            )
        case "start":
            return _start(msg)
        case "stop":
            body = _obj(msg, "stop", default={})
            return Stop(
                _str(msg, "streamSid"),
                _str(body, "accountSid", "stop.", default=""),
                _str(body, "callSid", "stop.", default=""),
                _seq(msg),
            )
        case "connected":
            return Connected(_str(msg, "protocol", default=""), _str(msg, "version", default=""))
        case other:
            return Unknown(other, MappingProxyType(msg))


def media(stream_sid: str, ulaw: bytes) -> str:
    """Outbound audio: raw μ-law 8 kHz, no header; Twilio queues it and plays in order."""
    return media_prefix(stream_sid) + base64.b64encode(ulaw).decode("ascii") + _MEDIA_END


def media_prefix(stream_sid: str) -> str:
    """Everything of an outbound ``media`` message before its payload, built once per
    stream: per frame only the base64 is new (same text as ``json.dumps`` would give)."""
    return '{"event":"media","streamSid":' + json.dumps(stream_sid) + ',"media":{"payload":"'


_MEDIA_END = '"}}'


def mark(stream_sid: str, name: str) -> str:
    """Ask Twilio to echo ``name`` once the audio sent before it has played (or is cleared)."""
    return _dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear(stream_sid: str) -> str:
    """Drop Twilio's queued audio: the first thing barge-in does."""
    return _dumps({"event": "clear", "streamSid": stream_sid})


# --- readers -------------------------------------------------------------------------

# Twilio's media frame, exactly as it writes it: no whitespace, keys in this order,
# numbers as strings of digits, ids and base64 without any escape. ``\Z``, not ``$``.
# Bytes, so the socket's text needs no decode; the payload's alphabet and padding are
# checked by the strict base64 decoder (``[^"]*`` only finds where it ends).
_MEDIA_RE = re.compile(
    rb'\{"event":"media","sequenceNumber":"([0-9]{1,18})","media":\{"track":"([a-z_]{1,32})",'
    rb'"chunk":"([0-9]{1,18})","timestamp":"([0-9]{1,18})","payload":"([^"]*)"\},'
    rb'"streamSid":"([A-Za-z0-9]{1,64})"\}\Z'
)
_match_media = _MEDIA_RE.match
# The same shape in two parts around the payload, capturing only what a live call uses
# (each group costs time): the payload's end is its first quote (``bytes.find``, not the
# regex engine a byte at a time over ~216 bytes of base64), and the rest must follow it.
_match_live_head = re.compile(
    rb'\{"event":"media","sequenceNumber":"[0-9]{1,18}","media":\{"track":"[a-z_]{1,32}",'
    rb'"chunk":"[0-9]{1,18}","timestamp":"([0-9]{1,18})","payload":"'
).match
_match_live_tail = re.compile(rb'"\},"streamSid":"[A-Za-z0-9]{1,64}"\}\Z').match
_b64decode = binascii.a2b_base64


def media_audio(payload: bytes) -> tuple[int, bytes] | None:
    """A ``media`` frame in Twilio's fixed shape: its timestamp and audio, without a JSON
    parse or an event object; None: not that shape, so ``decode`` must read it.

    Whenever this answers, ``decode`` gives a ``Media`` with the same two values: the
    shape is valid JSON, and strict base64 accepts only what ``validate=True`` does.
    """
    if len(payload) > MAX_FRAME_BYTES:
        return None
    head = _match_live_head(payload)
    if head is None:
        return None
    start = head.end()
    end = payload.find(b'"', start)
    if end < 0 or _match_live_tail(payload, end) is None:
        return None
    try:
        return int(head[1]), _b64decode(payload[start:end], strict_mode=True)
    except binascii.Error:
        return None  # the strict reader says what is wrong with it


def _fast_media(text: str) -> Media | None:
    """The common ``media`` frame without a JSON parse; None: use the strict reader."""
    if len(text) > MAX_FRAME_BYTES or not text.isascii():
        return None  # (the shape is all ASCII)
    match = _match_media(text.encode())
    if match is None:
        return None
    seq, track, chunk, timestamp, payload, stream_sid = match.groups()
    try:
        ulaw = _b64decode(payload, strict_mode=True)
    except binascii.Error:
        return None  # the strict reader says what is wrong with it
    return Media(stream_sid.decode(), track.decode(), int(chunk), int(timestamp), ulaw, int(seq))


def _media(msg: Mapping[str, Any]) -> Media:
    body = _obj(msg, "media")
    payload = _str(body, "payload", "media.")
    try:
        ulaw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedFrame(
            "base64", f"expected media.payload as base64, got invalid base64 ({exc})"
        ) from exc
    return Media(
        stream_sid=_str(msg, "streamSid"),
        track=_str(body, "track", "media.", default="inbound"),
        chunk=_int(body, "chunk", "media.", default=0),
        timestamp_ms=_int(body, "timestamp", "media."),
        ulaw=ulaw,
        sequence_number=_seq(msg),
    )


def _start(msg: Mapping[str, Any]) -> Start:
    body = _obj(msg, "start")
    fmt = _obj(body, "mediaFormat", "start.")
    tracks = body.get("tracks", [])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise MalformedFrame(
            "type", f"expected start.tracks as a list of strings, got {_kind(tracks)}"
        )
    params = body.get("customParameters", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise MalformedFrame(
            "type", f"expected start.customParameters as an object of strings, got {_kind(params)}"
        )
    stream_sid = _str(body, "streamSid", "start.", default="") or _str(msg, "streamSid")
    return Start(
        stream_sid=stream_sid,
        call_sid=_str(body, "callSid", "start."),
        account_sid=_str(body, "accountSid", "start.", default=""),
        tracks=tuple(tracks),
        media_format=MediaFormat(
            encoding=_str(fmt, "encoding", "start.mediaFormat."),
            sample_rate_hz=_int(fmt, "sampleRate", "start.mediaFormat."),
            channels=_int(fmt, "channels", "start.mediaFormat."),
        ),
        custom_parameters=MappingProxyType(dict(params)),
        sequence_number=_seq(msg),
    )


_MISSING: Any = object()


def _obj(
    msg: Mapping[str, Any], key: str, prefix: str = "", default: Any = _MISSING
) -> Mapping[str, Any]:
    value = msg.get(key, default)
    if value is _MISSING:
        raise MalformedFrame("type", f"expected {prefix}{key} as an object, got nothing")
    if not isinstance(value, dict):
        raise MalformedFrame("type", f"expected {prefix}{key} as an object, got {_kind(value)}")
    return value


def _str(msg: Mapping[str, Any], key: str, prefix: str = "", default: Any = _MISSING) -> str:
    value = msg.get(key, default)
    if value is _MISSING:
        raise MalformedFrame("type", f"expected {prefix}{key} as a string, got nothing")
    if not isinstance(value, str):
        raise MalformedFrame("type", f"expected {prefix}{key} as a string, got {_kind(value)}")
    return value


def _int(msg: Mapping[str, Any], key: str, prefix: str = "", default: Any = _MISSING) -> int:
    """Twilio sends numbers as strings of digits ("timestamp": "5"); accept plain ints too."""
    value = msg.get(key, default)
    if value is _MISSING:
        raise MalformedFrame("type", f"expected {prefix}{key} as a number, got nothing")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise MalformedFrame(
        "type", f"expected {prefix}{key} as a string of digits, got {_kind(value)}"
    )


def _seq(msg: Mapping[str, Any]) -> int | None:
    if "sequenceNumber" not in msg:
        return None
    return _int(msg, "sequenceNumber")


def _size(text: str | bytes) -> int:
    if isinstance(text, bytes) or len(text) * 4 <= MAX_FRAME_BYTES:
        return len(text)  # cheap path: even all-4-byte characters would fit
    return len(text.encode("utf-8", "surrogatepass"))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:17] + "..."
        return f"string {shown!r}"
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))
