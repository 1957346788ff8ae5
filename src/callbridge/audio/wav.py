"""WAV files: prompts and test audio in, call recordings out.

Reading accepts the PCM WAVs people actually have (8/16/24/32-bit, any channel count)
and returns 16-bit mono, because everything inside runs mono PCM16. Recording uses
:class:`IncrementalWavWriter`, which keeps the RIFF header true after every write, so a
process killed mid-call still leaves a playable file.
"""

from __future__ import annotations

import os
import struct
import wave
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from callbridge.errors import CallbridgeError

__all__ = ["IncrementalWavWriter", "WavFormatError", "read_wav", "write_wav"]

StrPath = str | os.PathLike[str]


class WavFormatError(CallbridgeError, ValueError):
    """The file is not a WAV we can read (not RIFF/WAVE, not integer PCM, bad width)."""


def read_wav(path: StrPath) -> tuple[bytes, int]:
    """Read an integer-PCM WAV as PCM16LE mono; returns ``(pcm16, rate_hz)``.

    Channels are averaged into one; 8-bit is unsigned per the WAV spec; wider
    samples keep their top 16 bits.
    """
    try:
        with wave.open(os.fspath(path), "rb") as w:
            channels = w.getnchannels()
            width = w.getsampwidth()
            rate_hz = w.getframerate()
            raw = w.readframes(w.getnframes())
    except wave.Error as exc:
        raise WavFormatError(
            f"{path}: not a PCM WAV file ({exc}); expected RIFF/WAVE with integer PCM "
            "(format 1), e.g. convert with `sox in.wav -e signed -b 16 out.wav`"
        ) from exc
    except EOFError as exc:
        raise WavFormatError(f"{path}: truncated WAV header") from exc
    samples = _to_int32(raw, width, path)
    usable = len(samples) - len(samples) % channels
    frames = samples[:usable].reshape(-1, channels)
    mono = frames[:, 0] if channels == 1 else frames.sum(axis=1, dtype=np.int64) // channels
    return mono.astype("<i2").tobytes(), rate_hz


def write_wav(path: StrPath, pcm16: bytes, rate_hz: int, channels: int = 1) -> None:
    """Write PCM16LE (interleaved when ``channels`` > 1) as a WAV file."""
    _check_format(rate_hz, channels)
    _check_block(pcm16, channels)
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(pcm16)


class IncrementalWavWriter:
    """A PCM16 WAV writer whose file is valid after every :meth:`write`.

    The header is written first with zero sizes; each write appends the samples, then
    patches the RIFF and data sizes and flushes to the OS. A crash between the append
    and the patch leaves the previous, still consistent, sizes.
    """

    def __init__(self, path: StrPath, rate_hz: int, channels: int = 1) -> None:
        _check_format(rate_hz, channels)
        self.path = Path(path)
        self.rate_hz = rate_hz
        self.channels = channels
        self._data_bytes = 0
        self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - held open by design
        self._file.write(_header(rate_hz, channels, 0))
        self._file.flush()

    @property
    def data_bytes(self) -> int:
        """PCM bytes written so far."""
        return self._data_bytes

    @property
    def duration_ms(self) -> int:
        """Audio written so far, in milliseconds."""
        return self._data_bytes * 1000 // (2 * self.channels * self.rate_hz)

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, pcm16: bytes) -> None:
        """Append whole sample frames (interleaved PCM16LE) and make the header match."""
        if self._file is None:
            raise ValueError(f"{self.path}: write after close")
        _check_block(pcm16, self.channels)
        if not pcm16:
            return
        total = self._data_bytes + len(pcm16)
        if _HEADER_BYTES - 8 + total > 0xFFFFFFFF:
            raise ValueError(f"{self.path}: WAV cannot hold more than 4 GiB of audio")
        f = self._file
        f.seek(_HEADER_BYTES + self._data_bytes)
        f.write(pcm16)
        self._data_bytes = total
        f.seek(4)
        f.write(struct.pack("<I", _HEADER_BYTES - 8 + total))
        f.seek(_HEADER_BYTES - 4)
        f.write(struct.pack("<I", total))
        f.flush()

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> IncrementalWavWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_HEADER_BYTES = 44


def _header(rate_hz: int, channels: int, data_bytes: int) -> bytes:
    block_align = 2 * channels
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        _HEADER_BYTES - 8 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,  # fmt chunk size for plain PCM
        1,  # WAVE_FORMAT_PCM
        channels,
        rate_hz,
        rate_hz * block_align,
        block_align,
        16,
        b"data",
        data_bytes,
    )


def _to_int32(raw: bytes, width: int, path: StrPath) -> npt.NDArray[np.int32]:
    if width == 1:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 8
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.int32)
    if width == 3:
        b = np.frombuffer(raw[: len(raw) // 3 * 3], dtype=np.uint8).reshape(-1, 3)
        top = b[:, 2].astype(np.int8).astype(np.int32)  # sign lives in the top byte
        return (top << 8) | b[:, 1].astype(np.int32)
    if width == 4:
        return np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i4") >> 16
    raise WavFormatError(f"{path}: unsupported sample width {width * 8} bits")


def _check_format(rate_hz: int, channels: int) -> None:
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    if channels <= 0:
        raise ValueError(f"channels must be positive, got {channels}")


def _check_block(pcm16: bytes, channels: int) -> None:
    if len(pcm16) % (2 * channels):
        raise ValueError(
            f"PCM16 with {channels} channel(s) needs a multiple of {2 * channels} bytes, "
            f"got {len(pcm16)}"
        )
