"""What the fake Deepgram checks of a ``/v1/listen`` request, and how it hears a frame.

The request rules follow Deepgram's streaming API reference (the 400s for a bad
encoding, sample rate, boolean, ``utterance_end_ms`` or ``endpointing``; 401 for a bad
key). Hearing is a level test: a frame is speech when any sample's μ-law segment reaches
the fake's ``silence_level``.
"""

from __future__ import annotations

import functools

__all__ = ["listen_request_verdict"]

_ENCODINGS = {"linear16", "flac", "mulaw", "alaw", "amr-nb", "amr-wb", "opus", "speex", "g729"}
_BOOLEAN_PARAMS = ("interim_results", "vad_events", "smart_format", "punctuate")


def listen_request_verdict(
    path: str, query: dict[str, list[str]], authorization: str | None, api_key: str
) -> tuple[int | None, str]:
    """(HTTP status, Deepgram's message) for a refused upgrade; (None, "") to accept."""
    if path != "/v1/listen":
        return 404, f"no route {path}"
    if authorization != f"Token {api_key}":
        return 401, "Invalid credentials."
    flat = {k: v[-1] for k, v in query.items()}
    encoding = flat.get("encoding")
    if encoding is not None and encoding not in _ENCODINGS:
        return 400, f"unsupported encoding {encoding!r}"
    if encoding is not None and not flat.get("sample_rate", "").isdigit():
        return 400, "sample_rate is required with encoding"
    for name in _BOOLEAN_PARAMS:
        if name in flat and flat[name] not in ("true", "false"):
            return 400, f"{name} must be true or false"
    if "utterance_end_ms" in flat:
        if not flat["utterance_end_ms"].isdigit() or int(flat["utterance_end_ms"]) < 1000:
            return 400, "utterance_end_ms must be an integer >= 1000"
        if flat.get("interim_results") != "true":
            return 400, "utterance_end_ms requires interim_results=true"
    if "endpointing" in flat and not (
        flat["endpointing"].isdigit() or flat["endpointing"] == "false"
    ):
        return 400, "endpointing must be milliseconds or false"
    return None, ""


def _loudness(ulaw: bytes) -> int:
    """Peak level of a μ-law frame on the 0..127 segment scale (0xFF/0x7F are silence)."""
    return max((0x7F - (b & 0x7F)) for b in ulaw)


@functools.cache
def _loud_codes(silence_level: int) -> bytes:
    """A ``bytes.translate`` table: 1 for the μ-law codes at or above ``silence_level``."""
    return bytes(int(0x7F - (b & 0x7F) >= silence_level) for b in range(256))


def _speech(ulaw: bytes, silence_level: int) -> bool:
    """``_loudness(ulaw) >= silence_level``, as a table lookup and a memchr in C: it runs
    for every 20 ms of every stream."""
    return b"\x01" in ulaw.translate(_loud_codes(silence_level))
