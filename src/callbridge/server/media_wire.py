"""WebSocket frames of the media path by hand (RFC 6455 §5.2), for the two shapes that
are nearly all of ``/media``'s traffic.

Twilio's inbound ``media`` message is one masked, final text frame of a few hundred
bytes; ours going out is one unmasked, final text frame. websockets' sans-I/O
``ServerProtocol`` reads each through a generator and a ``Frame`` object, and writes each
through another ``Frame``: for these two shapes that was most of the socket's cost.
``FrameSplitter`` reads the first and ``text_frame`` writes the second; any other frame
goes to websockets from its first byte to its last (``frame_length`` says where that
is), as does everything once the socket is not open, so every protocol error, close
code, ping and size limit is still websockets' own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

try:  # websockets' C helper; the same function its own parser uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a platform without the compiled helper
    from websockets.utils import apply_mask

__all__ = [
    "HOLD_MAX",
    "NEED_MORE",
    "NOT_FAST",
    "FrameSplitter",
    "fast_frame",
    "frame_length",
    "text_frame",
]

FIN_TEXT = 0x81
"""First header byte of a final text frame without extension bits."""
_MASKED = 0x80
_LEN16 = 126
_LEN64 = 127
_MASKED_LEN16 = _MASKED | _LEN16
NEED_MORE = -1
"""``fast_frame``: the frame's header or payload is not all here yet."""
NOT_FAST = -2
"""``fast_frame``: not the common shape; websockets reads this frame."""
HOLD_MAX = 4096
"""A common frame cut short is held until the rest comes if it is at most this long (a
20 ms media message is about 330 bytes); a longer one goes to websockets, whose buffer
grows without copying what it holds on every read."""


def fast_frame(buf: bytes, pos: int, limit: int) -> tuple[int, int]:
    """Where the payload of the frame at ``buf[pos]`` starts and ends, if it is a masked,
    final text frame with a 7- or 16-bit length of at most ``limit`` bytes; else
    ``(NOT_FAST, 0)``, or ``(NEED_MORE, end)`` (0 while the length is not here yet).
    The mask is the 4 bytes before the start."""
    have = len(buf) - pos
    if have < 2:
        return NEED_MORE, 0
    if buf[pos] != FIN_TEXT:
        return NOT_FAST, 0
    size = buf[pos + 1] ^ _MASKED  # the mask bit must be set: then this is the length
    if size < _LEN16:
        start = pos + 6
    elif size == _LEN16:
        if have < 4:
            return NEED_MORE, 0
        size = (buf[pos + 2] << 8) | buf[pos + 3]
        start = pos + 8
    else:  # unmasked (a protocol error), or a 64-bit length
        return NOT_FAST, 0
    if size > limit:
        return NOT_FAST, 0  # websockets refuses it (1009) as soon as it reads the length
    end = start + size
    if end > len(buf):
        return NEED_MORE, end
    return start, end


def frame_length(head: bytes) -> int | None:
    """All the bytes of the frame that ``head`` begins (header, mask key, payload); None
    while its header is not all in ``head``."""
    have = len(head)
    if have < 2:
        return None
    second = head[1]
    size, at = second & 0x7F, 2
    if size == _LEN16:
        if have < 4:
            return None
        size, at = int.from_bytes(head[2:4], "big"), 4
    elif size == _LEN64:
        if have < 10:
            return None
        size, at = int.from_bytes(head[2:10], "big"), 10
    return at + (4 if second & _MASKED else 0) + size


_head16 = struct.Struct("!BBH").pack


def text_frame(payload: bytes) -> bytes:
    """A server's final text frame around ``payload`` (unmasked, no extensions): the
    bytes websockets' ``send_text`` would write."""
    size = len(payload)
    if _LEN16 <= size < 1 << 16:  # a media message: 305 bytes for 20 ms, 517 for 40 ms
        return _head16(FIN_TEXT, _LEN16, size) + payload
    if size < _LEN16:
        return bytes((FIN_TEXT, size)) + payload
    return bytes((FIN_TEXT, _LEN64)) + size.to_bytes(8, "big") + payload


# What ``FrameSplitter`` is feeding websockets, besides a count of the bytes its current
# frame still needs (0: it is between frames).
_WS_REQUEST = -1  # the upgrade request (``_ws_head``: its last 3 bytes so far)
_WS_HEAD = -2  # a frame whose header is not all here yet (``_ws_head``: its bytes so far)
_WS_ALL = -3  # everything from now on: the socket is not open (any more)


def _unset(text: bytes) -> None:
    raise AssertionError("a frame read before the handshake was done")


class FrameSplitter:
    """A socket's bytes, in order, either read here (a common frame at a frame boundary)
    or handed to websockets (``to_ws``), which then always sees whole frames from a
    boundary on: the upgrade request first, any frame not of the common shape, and
    everything once the owner says the socket is not ``open``.

    The owner sets ``on_text`` (where the text of a frame read here goes) once the
    handshake is done, ``fast`` (frames may be read here now: open, and not in a
    fragmented message) and ``open`` (False: websockets reads everything from now on)
    after each ``to_ws`` and whenever it closes the socket itself.
    """

    __slots__ = ("_held", "_to_ws", "_ws_head", "_ws_owed", "fast", "limit", "on_text", "open")

    def __init__(self, limit: int, to_ws: Callable[[bytes], None]) -> None:
        self.limit = limit
        self.fast = False
        self.open = True
        self.on_text: Callable[[bytes], object] = _unset
        self._to_ws = to_ws
        self._held = b""  # the start of a frame read here, waiting for the rest
        self._ws_owed = _WS_REQUEST
        self._ws_head = b""

    def feed(self, data: bytes) -> None:
        if self._ws_owed:
            data = self._finish_ws(data)
        if not data:
            return
        # The frames of ``data`` from a boundary on (inline, not a call: every message).
        buf = self._held + data if self._held else data
        self._held = b""
        pos, limit, on_text = 0, self.limit, self.on_text
        while pos < len(buf):
            if self.fast:
                # ``fast_frame`` inline for a media message's own shape (a final, masked
                # text frame with a 16-bit length, all here): every message of every call.
                if buf[pos] == FIN_TEXT and len(buf) - pos >= 4 and buf[pos + 1] == _MASKED_LEN16:
                    size = (buf[pos + 2] << 8) | buf[pos + 3]
                    start = pos + 8
                    end = start + size
                    if size <= limit and end <= len(buf):
                        on_text(apply_mask(buf[start:end], buf[pos + 4 : start]))
                        pos = end
                        continue
                start, end = fast_frame(buf, pos, limit)
                if start >= 0:  # a masked, final text frame: its text, unmasked
                    on_text(apply_mask(buf[start:end], buf[start - 4 : start]))
                    pos = end
                    continue
                if start == NEED_MORE and end - pos <= HOLD_MAX:
                    self._held = buf[pos:]
                    return
            buf, pos = self._ws_frame(buf[pos:]), 0

    def eof(self) -> None:
        """The peer's end of the stream: a frame cut short goes to websockets, which says
        the stream ended mid-frame as if it had read it all."""
        held, self._held = self._held, b""
        self._ws_owed = _WS_ALL
        if held:
            self._to_ws(held)

    def _ws_frame(self, rest: bytes) -> bytes:
        """Hand websockets the frame ``rest`` begins (all of ``rest`` once the socket is
        not open); return what follows that frame."""
        if not self.open:
            self._ws_owed = _WS_ALL
            self._to_ws(rest)
            return b""
        total = frame_length(rest)
        if total is None:
            self._ws_owed, self._ws_head = _WS_HEAD, rest
            self._to_ws(rest)
            return b""
        self._ws_owed = max(0, total - len(rest))
        self._to_ws(rest[:total])
        return rest[total:]

    def _finish_ws(self, data: bytes) -> bytes:
        """Hand websockets what it needs of ``data`` to finish what it is reading; return
        the rest, which begins a frame."""
        owed = self._ws_owed
        if owed == _WS_ALL:
            self._to_ws(data)
            return b""
        if owed == _WS_REQUEST:
            seen = self._ws_head + data
            end = seen.find(b"\r\n\r\n")  # the end of the request's headers
            if end < 0:
                self._ws_head = seen[-3:]
                self._to_ws(data)
                return b""
            owed = end + 4 - len(self._ws_head)
        elif owed == _WS_HEAD:
            head = self._ws_head + data
            total = frame_length(head)
            if total is None:
                self._ws_head = head
                self._to_ws(data)
                return b""
            owed = total - len(self._ws_head)
        self._ws_head = b""
        self._ws_owed = max(0, owed - len(data))
        self._to_ws(data[:owed])
        return b"" if self._ws_owed else data[owed:]
