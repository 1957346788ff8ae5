"""A minimal RFC 6455 client, sans-I/O, for the load benchmark's callers only.

Why not ``websockets``: profiled at 50 calls on one core, its asyncio client's send
path (send context, per-frame locks and futures, ``SystemRandom`` masks) cost about as
much as the socket writes themselves, so the load generator, not the server, set the
ceiling. This does only what a Twilio media socket needs: the opening handshake,
masked text frames out, unfragmented or fragmented text/close/ping frames in. The
``simulate`` command keeps the full client.

Masks come from a seeded, non-cryptographic generator, drawn 4 KiB at a time and handed
out as successive 4-byte slices: their unpredictability only guards proxies against
hostile browser scripts, and this client talks to 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import struct
from typing import NamedTuple
from urllib.parse import urlsplit

from websockets.speedups import apply_mask

from callbridge.errors import TwilioProtocolError

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameParser",
    "Handshake",
    "WsFrame",
    "close_frame",
    "encode_frame",
]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEADER_BYTES = 16 * 1024
_MASK_POOL_BYTES = 4096
_masks = random.Random(os.getpid())


class _MaskPool:
    """Successive 4-byte masks from a block of the seeded generator (one call per 1024)."""

    def __init__(self) -> None:
        self._block = b""
        self._at = _MASK_POOL_BYTES

    def next(self) -> bytes:
        at = self._at
        if at >= _MASK_POOL_BYTES:
            self._block, at = _masks.randbytes(_MASK_POOL_BYTES), 0
        self._at = at + 4
        return self._block[at : at + 4]


_pool = _MaskPool()


class WsFrame(NamedTuple):
    """One whole message (continuations joined) or one control frame."""

    opcode: int
    payload: bytes


_HEAD_7 = struct.Struct("!BB")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


def encode_frame(payload: bytes, opcode: int = OP_TEXT, mask: bytes | None = None) -> bytes:
    """A single final client frame: header, mask key, masked payload."""
    key = mask if mask is not None else _pool.next()
    n = len(payload)
    if n < 126:
        header = _HEAD_7.pack(0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = _HEAD_16.pack(0x80 | opcode, 0x80 | 126, n)
    else:
        header = _HEAD_64.pack(0x80 | opcode, 0x80 | 127, n)
    return b"".join((header, key, apply_mask(payload, key)))


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return encode_frame(struct.pack("!H", code) + reason.encode(), OP_CLOSE)


class FrameParser:
    """Bytes from the server in, whole frames out. Server frames are never masked."""

    def __init__(self, max_message_bytes: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._part_opcode = 0
        self._max = max_message_bytes

    def feed(self, data: bytes) -> list[WsFrame]:
        # Most reads hold whole frames: parse them from ``data`` itself, and keep only a
        # partial tail (bytes and slices, no buffer growing and shrinking per read).
        buf: bytes | bytearray = data
        if self._buf:
            self._buf += data
            buf = self._buf
        out: list[WsFrame] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                raise TwilioProtocolError("expected unmasked frames from the server, got a mask")
            if b0 & 0x70:
                raise TwilioProtocolError("expected no RSV bits (no extension was negotiated)")
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                (n,) = struct.unpack_from("!H", buf, pos + 2)
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                (n,) = struct.unpack_from("!Q", buf, pos + 2)
                head = 10
            if n > self._max:
                raise TwilioProtocolError(f"expected a frame of at most {self._max} bytes, got {n}")
            if end - pos < head + n:
                break
            if buf is data:  # (slicing bytes copies once; a bytearray slice needs bytes())
                payload = data[pos + head : pos + head + n]
            else:
                payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            if b0 == 0x81 and not self._parts:  # a whole text message: most of them
                out.append(WsFrame(OP_TEXT, payload))
                continue
            frame = self._frame(b0 & 0x80 != 0, b0 & 0x0F, payload)
            if frame is not None:
                out.append(frame)
        if buf is data:
            if pos < end:
                self._buf = bytearray(data[pos:])
        else:
            del self._buf[:pos]
        return out

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> WsFrame | None:
        if opcode >= 0x8:  # control frames may sit between the fragments of a message
            if not fin or len(payload) > 125:
                raise TwilioProtocolError("expected a final control frame of at most 125 bytes")
            return WsFrame(opcode, payload)
        if opcode == OP_CONT:
            if not self._parts:
                raise TwilioProtocolError("expected a first fragment, got a continuation")
            self._parts.append(payload)
            if sum(map(len, self._parts)) > self._max:
                raise TwilioProtocolError(f"expected a message of at most {self._max} bytes")
            if not fin:
                return None
            joined, self._parts = b"".join(self._parts), []
            return WsFrame(self._part_opcode, joined)
        if opcode not in (OP_TEXT, OP_BINARY):
            raise TwilioProtocolError(f"expected a known opcode, got {opcode:#x}")
        if self._parts:
            raise TwilioProtocolError("expected a continuation, got a new message")
        if fin:
            return WsFrame(opcode, payload)
        self._parts, self._part_opcode = [payload], opcode
        return None


class Handshake:
    """The opening handshake: the request to write, then the response to check."""

    def __init__(self, url: str, headers: dict[str, str], key: bytes | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise ValueError(f"expected a ws:// URL, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.key = base64.b64encode(key if key is not None else os.urandom(16)).decode()
        self._headers = headers
        self._buf = bytearray()

    def request(self) -> bytes:
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in self._headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def expected_accept(self) -> str:
        return base64.b64encode(hashlib.sha1(self.key.encode() + _GUID).digest()).decode()

    def feed(self, data: bytes) -> bytes | None:
        """Bytes of the response; ``None`` until it is whole, then the bytes after it
        (frames the server sent right behind its 101). Raises if it is refused."""
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_HEADER_BYTES:
                raise TwilioProtocolError("expected a handshake response, got oversized headers")
            return None
        head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        rest = bytes(self._buf[end + 4 :])
        status = head[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            raise TwilioProtocolError(f"expected HTTP 101 to the upgrade, got {head[0]!r}")
        fields: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if fields.get("upgrade", "").lower() != "websocket":
            raise TwilioProtocolError("expected 'Upgrade: websocket' in the response")
        if fields.get("sec-websocket-accept") != self.expected_accept():
            raise TwilioProtocolError("expected a Sec-WebSocket-Accept matching our key")
        if fields.get("sec-websocket-extensions"):
            raise TwilioProtocolError("expected no extension: none was offered")
        return rest
