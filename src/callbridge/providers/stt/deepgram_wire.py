"""Deepgram's live-transcription wire format, without I/O: the control messages the
client sends, the URL it opens (``listen_url``) and what each server message means
(``decode``). The socket, pacing and reconnects are ``deepgram.py``'s; this is what it
puts on and reads off the wire."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

from callbridge.providers.base import (
    SttEvent,
    SttSpeechStarted,
    SttUtteranceEnd,
    TranscriptUpdate,
)
from callbridge.providers.env import to_websocket_url

if TYPE_CHECKING:
    from callbridge.providers.stt.deepgram import DeepgramConfig

__all__ = ["CLOSE_STREAM", "FINALIZE", "KEEPALIVE", "MALFORMED", "decode", "listen_url"]

KEEPALIVE: Final = json.dumps({"type": "KeepAlive"})
FINALIZE: Final = json.dumps({"type": "Finalize"})
CLOSE_STREAM: Final = json.dumps({"type": "CloseStream"})
MALFORMED: Final = (ValueError, KeyError, TypeError, IndexError)
"""What ``decode`` raises for a message that is not Deepgram's JSON."""


def decode(text: str) -> tuple[str, Mapping[str, Any], SttEvent | None]:
    """A server message → (its type, the message, the event it carries, if any);
    raises one of ``MALFORMED`` when it is not a Deepgram message."""
    message = json.loads(text)
    kind = message["type"]
    if kind == "Results":
        return kind, message, _transcript(message)
    if kind == "SpeechStarted":
        return kind, message, SttSpeechStarted()
    if kind == "UtteranceEnd":
        return kind, message, SttUtteranceEnd()
    return kind, message, None


def _transcript(message: Mapping[str, Any]) -> TranscriptUpdate:
    """``Results`` → ``TranscriptUpdate``, empty ones included.

    An empty interim is news: Deepgram heard this audio and found no words in it yet,
    which is what ``interruptMinWords`` waits on (a cough is not a barge-in). An empty
    final answers ``Finalize`` with "nothing was said".
    """
    text = str(message["channel"]["alternatives"][0]["transcript"])
    is_final = bool(message.get("is_final", False))
    return TranscriptUpdate(
        text=text, is_final=is_final, speech_final=bool(message.get("speech_final", False)),
        from_finalize=bool(message.get("from_finalize", False)),
    )


def listen_url(config: DeepgramConfig, base: str) -> str:
    """The ``/v1/listen`` URL with the query parameters of providers.md."""
    params: dict[str, str] = {
        "model": config.model,
        "encoding": "mulaw",
        "sample_rate": "8000",
        "channels": "1",
        "interim_results": "true",
        "endpointing": str(config.endpointing),
        "utterance_end_ms": str(config.utterance_end_ms),
        "vad_events": "true",
        "smart_format": "true" if config.smart_format else "false",
    }
    if config.language:
        params["language"] = config.language
    return f"{to_websocket_url(base)}/v1/listen?{urlencode(params)}"
