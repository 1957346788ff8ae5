"""Which of a stream's messages count, and the account of those that do not.

The codec says what is wrong with a frame; this keeps the per-stream and process-wide
tallies, logs the first few of each kind (then every 100th) and records them in the
call's record. A bad frame never ends a call.
"""

from __future__ import annotations

import logging
from collections import Counter

from callbridge.call_events import Emit, FrameRejected, ignore
from callbridge.telemetry.logging import log_event
from callbridge.twilio import codec

__all__ = ["FrameCheck"]

log = logging.getLogger("callbridge.server.media")  # the stream's events, one logger

_LOG_FIRST = 5


class FrameCheck:
    def __init__(self, process_tally: Counter[str]) -> None:
        self.rejected: Counter[str] = Counter()
        self.emit: Emit = ignore  # the call's, once it has started
        self._process_tally = process_tally

    def decode(self, payload: bytes) -> codec.Inbound | None:
        """The message's event, or None (counted) when it is not one we can use."""
        try:
            text: str | bytes = payload.decode()
        except UnicodeDecodeError:
            text = payload  # the codec says what is wrong with it
        try:
            event = codec.decode(text)
        except codec.MalformedFrame as exc:
            self.count(exc.kind, str(exc))
            return None
        if isinstance(event, codec.Unknown):
            self.count("unknown", f"unknown event {event.event!r}")
            return None
        return event

    def count(self, kind: str, detail: str) -> None:
        """Count a rejected frame; log and record the first few of each kind, then every
        100th."""
        self.rejected[kind] += 1
        self._process_tally[kind] += 1
        n = self.rejected[kind]
        if n <= _LOG_FIRST or n % 100 == 0:
            log_event(log, logging.WARNING, "stream.bad_frame", kind=kind, count=n, detail=detail)
            self.emit(FrameRejected(kind, n, detail))
