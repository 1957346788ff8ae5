"""20 ms framing: the unit Twilio sends and expects, and the unit playout paces.

TTS vendors hand back audio in whatever chunk sizes their HTTP/WebSocket stack
produced (often odd byte counts), so a :class:`Framer` keeps the remainder between
chunks and only ever hands out whole frames.
"""

from __future__ import annotations

from callbridge.audio import ulaw

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "PCM_FRAME_BYTES",
    "PCM_SILENCE",
    "SAMPLE_RATE_HZ",
    "SILENT_PAD",
    "ULAW_FRAME_BYTES",
    "Framer",
    "split_frames",
]

SAMPLE_RATE_HZ = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE_HZ * FRAME_MS // 1000  # 160
ULAW_FRAME_BYTES = FRAME_SAMPLES  # one byte per sample
PCM_FRAME_BYTES = FRAME_SAMPLES * 2  # PCM16: two bytes per sample

PCM_SILENCE = b"\x00"
# Default padding byte: μ-law silence, and -1 LSB (inaudible) when read as PCM16, so
# forgetting to pass the right pad can never put a full-scale click on the line
# (0x00 would: it is the loudest negative μ-law code).
SILENT_PAD = ulaw.SILENCE


class Framer:
    """Accumulates arbitrary-size chunks and hands out whole frames of ``frame_bytes``."""

    __slots__ = ("_tail", "frame_bytes")

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
        self.frame_bytes = frame_bytes
        self._tail = b""  # less than a frame

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for the rest of their frame."""
        return len(self._tail)

    def push(self, data: bytes) -> list[bytes]:
        """Add a chunk; return every frame now complete (possibly none)."""
        size = self.frame_bytes
        if self._tail:
            data = self._tail + data  # copies the chunk and less than a frame
        elif type(data) is not bytes:
            data = bytes(data)  # a bytearray's slices would be bytearrays
        elif len(data) == size:
            return [data]  # the usual case: a whole frame in, the same frame out
        whole = len(data) - len(data) % size
        self._tail = data[whole:]
        return [data[i : i + size] for i in range(0, whole, size)]

    def flush(self, pad: bytes = SILENT_PAD) -> bytes | None:
        """Return the held-back tail padded to a whole frame with ``pad``, or None if empty.

        Call it at the end of a TTS segment so its last few milliseconds are not lost.
        """
        if not self._tail:
            return None
        frame = _pad(self._tail, self.frame_bytes, pad)
        self._tail = b""
        return frame

    def clear(self) -> None:
        """Drop the held-back tail (barge-in: the rest of the reply will never play)."""
        self._tail = b""


def split_frames(data: bytes, frame_bytes: int, pad: bytes = SILENT_PAD) -> list[bytes]:
    """Cut ``data`` into frames of ``frame_bytes``; the last one is padded with ``pad``."""
    framer = Framer(frame_bytes)
    frames = framer.push(data)
    tail = framer.flush(pad)
    if tail is not None:
        frames.append(tail)
    return frames


def _pad(tail: bytes, frame_bytes: int, pad: bytes) -> bytes:
    if not pad:
        raise ValueError("pad must be at least one byte, e.g. ulaw.SILENCE or PCM_SILENCE")
    need = frame_bytes - len(tail)
    return tail + (pad * (need // len(pad) + 1))[:need]
