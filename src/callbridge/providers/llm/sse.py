"""Server-Sent Events read from raw bytes: the HTML standard's ``text/event-stream``
parser (§9.2.6), sans-I/O.

A model streams one token per event, so this runs once a token for every call; httpx2's
``EventSource`` took four layers of generators and a text decoder per network chunk to
get there. ``SseDecoder.feed`` takes the bytes as they arrive and returns the events they
complete. What the standard asks, and the tests check: lines end with LF, CRLF or CR
(also when a CRLF is split between two chunks); a line that starts with ``:`` is a
comment; ``field: value`` loses one leading space; several ``data`` lines join with LF;
a blank line dispatches, and an event without ``data`` is not one; ``id`` persists
across events (unless it holds NUL); a leading BOM is dropped; an event left incomplete
at the end of the stream is discarded. Lines are split on bytes and decoded as UTF-8 one
by one, which is the same as decoding first: LF, CR and ``:`` never occur inside a
multi-byte character. A chunk made only of whole one-line ``data: …`` events, with no
partial line before it, is split on its blank lines at once (the tests run both ways).
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["ServerSentEvent", "SseDecoder"]

_BOM: Final = b"\xef\xbb\xbf"


class ServerSentEvent(NamedTuple):
    """One event; a tuple, which a frozen dataclass costs twice as much to make
    (one an event, one an event a token)."""

    data: str
    event: str = "message"
    id: str = ""


class SseDecoder:
    """One stream's parser state; ``feed`` chunks in order."""

    __slots__ = ("_data", "_event", "_id", "_pending_cr", "_started", "_tail", "retry_ms")

    def __init__(self) -> None:
        self._tail = b""  # the start of a line whose end has not arrived
        self._pending_cr = False  # the last chunk ended with CR: a LF next completes it
        self._started = False  # past the place of a byte-order mark
        self._data: list[bytes] = []
        self._event = b""
        self._id = ""
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if not chunk:
            return []
        if self._started and not (self._tail or self._pending_cr or self._data or self._event):
            whole = self._whole_data_events(chunk)
            if whole is not None:
                return whole
        if self._pending_cr:
            self._pending_cr = False
            if chunk[0] == 0x0A:  # the LF of a CRLF whose CR ended the last chunk
                chunk = chunk[1:]
        buffer = self._tail + chunk if self._tail else chunk
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._tail = buffer  # too short to know yet
                return []
            self._started = True
            buffer = buffer.removeprefix(_BOM)
        if 0x0D in buffer:
            self._pending_cr = buffer[-1] == 0x0D
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._tail = lines.pop()
        events: list[ServerSentEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(self._dispatch())
                else:
                    self._event = b""
            elif line[0] != 0x3A:  # ":" starts a comment
                self._field(line)
        return events

    def _whole_data_events(self, chunk: bytes) -> list[ServerSentEvent] | None:
        """The events of a chunk made only of whole ``data: …`` events of one line each
        (what a model sends, one a token), or None for the line by line parser."""
        if chunk[-2:] != b"\n\n" or 0x0D in chunk:
            return None
        records = chunk.split(b"\n\n")
        records.pop()
        for record in records:
            if record[:6] != b"data: " or 0x0A in record:
                return None
        return [ServerSentEvent(record[6:].decode("utf-8", "replace"), "message", self._id)
                for record in records]

    def _field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\x00" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self.retry_ms = int(value)

    def _dispatch(self) -> ServerSentEvent:
        data = b"\n".join(self._data) if len(self._data) > 1 else self._data[0]
        event = self._event.decode("utf-8", "replace") if self._event else "message"
        self._data = []
        self._event = b""
        return ServerSentEvent(data.decode("utf-8", "replace"), event, self._id)
