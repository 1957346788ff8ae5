"""G.711 μ-law ↔ PCM16LE, bit-exact with CPython's ``audioop`` (removed in 3.13).

Both directions are one numpy table lookup: the encode table has an entry for every
16-bit sample (indexed by the sample's bits read as uint16), the decode table one per
code byte. Both are built once at import, so a 20 ms frame costs a few microseconds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["SILENCE", "decode", "decode_codes", "encode"]

SILENCE = b"\xff"
"""The μ-law code for 0: what G.711 idles on (0x7f decodes to 0 too; 0x00 is the loudest
negative sample, a click)."""


def encode(pcm16: bytes) -> bytes:
    """PCM16 little-endian → μ-law, one byte per sample."""
    if len(pcm16) % 2:
        raise ValueError(
            f"PCM16 input must have an even number of bytes (2 per sample), got {len(pcm16)}"
        )
    codes: npt.NDArray[np.uint8] = _ENCODE[np.frombuffer(pcm16, dtype="<u2")]
    return codes.tobytes()


def decode(ulaw: bytes) -> bytes:
    """μ-law → PCM16 little-endian, two bytes per sample."""
    # ``take``, not ``_DECODE[codes]``: the same lookup without fancy indexing's set-up
    # (a third less per 20 ms frame, and every caller frame of every call is decoded).
    linear: npt.NDArray[np.int16] = _DECODE.take(np.frombuffer(ulaw, dtype=np.uint8))
    return linear.tobytes()


def decode_codes(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    """``decode`` of an array of codes, as an array: many frames in one lookup. An even
    count (whole frames) is looked up two codes at a time, in a table of every pair: half
    the elements for ``take``, whose cost is per element (every caller frame, every call)."""
    if len(codes) % 2 or not codes.flags.c_contiguous:
        return _DECODE.take(codes)
    pairs: npt.NDArray[np.int16] = _DECODE_PAIRS.take(codes.view("<u2")).view("<i2")
    return pairs


# G.711 as audioop implements it: work on the 14-bit magnitude, add the bias,
# find the segment (exponent), keep 4 mantissa bits, invert all bits.
_BIAS = 0x84
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_encode_table() -> npt.NDArray[np.uint8]:
    samples = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)
    v = samples >> 2  # 14-bit signed, arithmetic shift as in audioop
    mask = np.where(v < 0, 0x7F, 0xFF)
    mag = np.abs(v) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_END, mag, side="left")
    mantissa = (mag >> np.minimum(seg + 1, 31)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


def _build_decode_table() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    linear = np.where(u & 0x80, _BIAS - t, t - _BIAS)
    return linear.astype("<i2")


_ENCODE = _build_encode_table()
_DECODE = _build_decode_table()


def _build_pair_table() -> npt.NDArray[np.uint32]:
    """Two codes read as one little-endian uint16 → their two samples as one ``<u4``
    (the first code's sample in the low half: little-endian int16s, in order)."""
    pair = np.arange(65536, dtype=np.uint32)
    low = _DECODE.view("<u2")[pair & 0xFF].astype(np.uint32)
    high = _DECODE.view("<u2")[pair >> 8].astype(np.uint32)
    table: npt.NDArray[np.uint32] = (low | (high << 16)).astype("<u4")
    return table


_DECODE_PAIRS = _build_pair_table()  # 256 KiB
