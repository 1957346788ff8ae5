"""Our client WebSockets to the vendors (Deepgram, ElevenLabs): cheaper frames, a send
that does not wait.

A client must mask every frame it sends with 4 unpredictable bytes (RFC 6455 §5.3).
websockets takes them from ``secrets.token_bytes(4)``, one ``getrandom`` system call a
frame, and serializes through ``io.BytesIO`` and ``struct``: at a hundred calls sending
audio that was a twentieth of the server's core (``bench/load.py --stack seed
--profile``). ``MaskSource`` draws the same kernel CSPRNG (``os.urandom``) a kilobyte at
a time and hands out 4 bytes at a time, each used once: as unpredictable to the peer,
256 frames a system call. It belongs to one connection (one event loop, no locks).

The hook is websockets' own: ``connect(create_connection=VendorConnection)``, the
documented way to customise a client connection. Its protocol (the sans-I/O
``ClientProtocol`` that ``connect`` built) becomes ``PooledMaskProtocol``, whose only
difference is ``send_frame``; nothing in the library changes for any other socket.

``send_nowait`` writes a message at once when the socket is open and its write buffer
is below the limit, what websockets' own ``broadcast`` does, without the
``send_context`` and ``drain`` of an awaited ``send``; when it says False the caller
awaits ``send`` (back-pressure, or a closing socket that ``send`` reports). ``send``
itself tries it first: when the buffer has room the library's ``send`` would not have
waited either. A whole message on a socket with nothing else pending (no extension, no
fragmented message under way, no control frame queued by the protocol) is encoded and
written in one step, as ``send_binary``/``send_text`` + ``send_data`` would write it
(a test compares the bytes), without the ``Frame``, its checks and the write list
between them: Deepgram gets 25 of these a second from every call.
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterable, Iterable
from typing import Any, Final

from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.protocol import OPEN
from websockets.typing import BytesLike, DataLike

try:  # the C version websockets ships; the pure-Python one otherwise
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

__all__ = ["MaskSource", "PooledMaskProtocol", "VendorConnection", "encode_client_frame"]

MASK_POOL_BYTES: Final = 1024
_LENGTH16: Final = struct.Struct("!BBH")
_LENGTH64: Final = struct.Struct("!BBQ")
_FIN_TEXT: Final = 0x81  # FIN | opcode (RFC 6455 §5.2)
_FIN_BINARY: Final = 0x82


class MaskSource:
    """Masking keys from ``os.urandom``, fetched ``pool_bytes`` at a time, each used once."""

    __slots__ = ("_at", "_pool", "_pool_bytes")

    def __init__(self, pool_bytes: int = MASK_POOL_BYTES) -> None:
        if pool_bytes < 4 or pool_bytes % 4:
            raise ValueError("the pool holds whole 4-byte keys")
        self._pool_bytes = pool_bytes
        self._pool = b""
        self._at = 0

    def take(self) -> bytes:
        at = self._at
        if at >= len(self._pool):
            self._pool = os.urandom(self._pool_bytes)
            at = 0
        self._at = at + 4
        return self._pool[at : at + 4]


def encode_client_frame(frame: Frame, mask: bytes) -> bytes:
    """A frame as a client sends it (no extensions): header, mask, masked payload."""
    return _encode((0x80 if frame.fin else 0) | frame.opcode, frame.data, mask)


def _encode(head1: int, data: BytesLike, mask: bytes) -> bytes:
    length = len(data)
    if length < 126:
        header = bytes((head1, 0x80 | length))
    elif length < 65536:
        header = _LENGTH16.pack(head1, 0xFE, length)
    else:
        header = _LENGTH64.pack(head1, 0xFF, length)
    return b"".join((header, mask, apply_mask(data, mask)))


class PooledMaskProtocol(ClientProtocol):
    """websockets' client protocol with masks from a ``MaskSource``."""

    masks: MaskSource

    def send_frame(self, frame: Frame) -> None:
        if self.extensions:  # not ours (no compression): keep the library's encoder
            super().send_frame(frame)
            return
        if self.debug:
            self.logger.debug("> %s", frame)
        frame.check()
        self.writes.append(encode_client_frame(frame, self.masks.take()))


class VendorConnection(ClientConnection):
    """A ``ClientConnection`` with pooled masks and ``send_nowait``."""

    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        # connect() built a plain ClientProtocol; this one socket's becomes ours.
        protocol.__class__ = PooledMaskProtocol
        assert isinstance(protocol, PooledMaskProtocol)
        protocol.masks = MaskSource()
        super().__init__(protocol, **kwargs)

    async def send(
        self,
        message: DataLike | Iterable[DataLike] | AsyncIterable[DataLike],
        *,
        text: bool | None = None,
    ) -> None:
        if text is None and isinstance(message, str | bytes) and self.send_nowait(message):
            return
        await super().send(message, text=text)

    def send_nowait(self, message: str | bytes) -> bool:
        """Write ``message`` now; False (nothing sent) if the socket is not open, a
        fragmented send is under way, or the write buffer is full."""
        protocol = self.protocol
        if protocol.state is not OPEN or self.send_in_progress is not None or self.paused:
            return False
        if not (protocol.writes or protocol.extensions or protocol.expect_continuation_frame
                or protocol.debug):
            assert isinstance(protocol, PooledMaskProtocol)
            if isinstance(message, str):
                frame = _encode(_FIN_TEXT, message.encode(), protocol.masks.take())
            else:
                frame = _encode(_FIN_BINARY, message, protocol.masks.take())
            try:
                self.transport.write(frame)
            except Exception as exc:  # what send_context does: the socket is dead
                self.set_connection_exc(exc)
                self.transport.abort()
            return True
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        else:
            self.protocol.send_binary(message)
        try:
            self.send_data()
        except Exception as exc:  # what send_context does: the socket is dead
            self.set_connection_exc(exc)
            self.transport.abort()
        return True
