"""Twilio's side of Media Streams: the JSON it sends, and the server's replies parsed.

Kept byte-for-byte to Twilio's documented shapes (shared/protocols/twilio.md): numbers
travel as strings, ``start`` carries ``customParameters`` and ``mediaFormat``. Pure
functions, so the shapes are tested without a socket. Media messages are built by
string formatting because the load benchmark sends 10 000 of them a second.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from callbridge.errors import TwilioProtocolError

__all__ = [
    "ServerClear",
    "ServerMark",
    "ServerMedia",
    "ServerMessage",
    "ServerOther",
    "connected",
    "dtmf",
    "mark_echo",
    "media",
    "new_sid",
    "parse_server",
    "start",
    "stop",
]


def new_sid(prefix: str) -> str:
    """A Twilio-shaped id: two letters and 32 hex digits (``CA…``, ``MZ…``, ``AC…``)."""
    return prefix + secrets.token_hex(16)


def connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(
    seq: int,
    *,
    account_sid: str,
    call_sid: str,
    stream_sid: str,
    parameters: Mapping[str, str],
) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(parameters),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream_sid,
        }
    )


def media(seq: int, chunk: int, timestamp_ms: int, stream_sid: str, payload_b64: str) -> str:
    """``payload_b64`` is pre-encoded: the caller's audio is known before the call."""
    return (
        f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound",'
        f'"chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":"{payload_b64}"}},'
        f'"streamSid":"{stream_sid}"}}'
    )


def dtmf(seq: int, stream_sid: str, digit: str) -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": str(seq),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def mark_echo(seq: int, stream_sid: str, name: str) -> str:
    return json.dumps(
        {
            "event": "mark",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def stop(seq: int, *, account_sid: str, call_sid: str, stream_sid: str) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )


# ------------------------------------------------------------ server → Twilio


@dataclass(frozen=True, slots=True)
class ServerMedia:
    ulaw: bytes


@dataclass(frozen=True, slots=True)
class ServerMark:
    name: str


@dataclass(frozen=True, slots=True)
class ServerClear:
    pass


@dataclass(frozen=True, slots=True)
class ServerOther:
    """An event Twilio would ignore; the simulator counts it instead of dropping it."""

    event: str
    raw: Mapping[str, Any]


ServerMessage = ServerMedia | ServerMark | ServerClear | ServerOther


def parse_server(text: str | bytes, stream_sid: str) -> ServerMessage:
    """Validate one message from the server as strictly as Twilio does."""
    if isinstance(text, bytes):
        raise TwilioProtocolError("expected a JSON text frame, got a binary frame")
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise TwilioProtocolError(f"expected JSON, got {text[:80]!r}") from exc
    if not isinstance(message, dict):
        raise TwilioProtocolError(f"expected a JSON object, got {type(message).__name__}")
    event = message.get("event")
    if event in ("media", "mark", "clear") and message.get("streamSid") != stream_sid:
        raise TwilioProtocolError(
            f"expected streamSid {stream_sid!r} on {event!r}, got {message.get('streamSid')!r}"
        )
    match event:
        case "media":
            payload = _field(message, "media", "payload")
            try:
                return ServerMedia(base64.b64decode(payload, validate=True))
            except ValueError as exc:
                raise TwilioProtocolError("expected base64 in media.payload") from exc
        case "mark":
            return ServerMark(_field(message, "mark", "name"))
        case "clear":
            return ServerClear()
        case str() as other:
            return ServerOther(other, message)
        case _:
            raise TwilioProtocolError(f"expected an 'event' string, got {event!r}")


def _field(message: Mapping[str, Any], outer: str, inner: str) -> str:
    block = message.get(outer)
    value = block.get(inner) if isinstance(block, dict) else None
    if not isinstance(value, str):
        raise TwilioProtocolError(f"expected a string at {outer}.{inner}, got {value!r}")
    return value
