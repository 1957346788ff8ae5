"""Twilio Media Streams messages, shaped exactly as Twilio sends them (strings of digits
for numbers, ``inbound`` track, base64 μ-law payloads), for driving ``/media`` in tests."""

from __future__ import annotations

import base64
import json
import secrets

__all__ = [
    "ACCOUNT_SID",
    "call_sid",
    "connected",
    "dtmf",
    "mark",
    "media",
    "start",
    "stop",
    "stream_sid",
]

ACCOUNT_SID = "AC" + "0" * 32


def call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def stream_sid() -> str:
    return "MZ" + secrets.token_hex(16)


def connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(
    stream: str,
    call: str,
    params: dict[str, str],
    *,
    seq: int = 1,
    encoding: str = "audio/x-mulaw",
    rate: int = 8000,
    channels: int = 1,
) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": stream,
                "callSid": call,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": encoding, "sampleRate": rate, "channels": channels},
                "customParameters": params,
            },
            "streamSid": stream,
        }
    )


def media(
    stream: str, ulaw: bytes, *, seq: int, chunk: int, timestamp_ms: int, compact: bool = False
) -> str:
    """``compact``: byte for byte as Twilio writes it (the server's fast path); without,
    the same message with JSON's default spacing (the strict reader's)."""
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(ulaw).decode(),
            },
            "streamSid": stream,
        },
        separators=(",", ":") if compact else None,
    )


def dtmf(stream: str, digit: str, *, seq: int) -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "streamSid": stream,
            "sequenceNumber": str(seq),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def mark(stream: str, name: str, *, seq: int) -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": str(seq), "streamSid": stream, "mark": {"name": name}}
    )


def stop(stream: str, call: str, *, seq: int) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": stream,
            "stop": {"accountSid": ACCOUNT_SID, "callSid": call},
        }
    )
