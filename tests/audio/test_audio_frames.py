"""Framing must never lose, duplicate or reorder a byte, whatever the chunk sizes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio import frames
from callbridge.audio.frames import Framer, split_frames


def test_constants_describe_20ms_at_8khz() -> None:
    assert frames.SAMPLE_RATE_HZ == 8000
    assert frames.FRAME_MS == 20
    assert frames.FRAME_SAMPLES == 160
    assert frames.ULAW_FRAME_BYTES == 160
    assert frames.PCM_FRAME_BYTES == 320


@given(
    chunks=st.lists(st.binary(max_size=700), max_size=30),
    frame_bytes=st.integers(1, 400),
)
def test_framer_never_loses_or_duplicates_bytes(chunks: list[bytes], frame_bytes: int) -> None:
    framer = Framer(frame_bytes)
    out: list[bytes] = []
    for chunk in chunks:
        out += framer.push(chunk)
        assert framer.pending < frame_bytes
    tail = framer.flush(b"\xaa")
    data = b"".join(chunks)
    assert all(len(f) == frame_bytes for f in out)
    assert b"".join(out) == data[: len(out) * frame_bytes]
    rest = data[len(out) * frame_bytes :]
    if rest:
        assert tail == rest + b"\xaa" * (frame_bytes - len(rest))
    else:
        assert tail is None
    assert framer.pending == 0


@given(data=st.binary(max_size=3000), frame_bytes=st.integers(1, 400))
def test_split_frames_covers_data_exactly_once(data: bytes, frame_bytes: int) -> None:
    out = split_frames(data, frame_bytes, pad=b"\x00")
    assert len(out) == -(-len(data) // frame_bytes)
    assert all(len(f) == frame_bytes for f in out)
    joined = b"".join(out)
    assert joined[: len(data)] == data
    assert joined[len(data) :] == b"\x00" * (len(joined) - len(data))


def test_push_returns_whole_frames_only() -> None:
    framer = Framer(4)
    assert framer.push(b"abc") == []
    assert framer.pending == 3
    assert framer.push(b"defghij") == [b"abcd", b"efgh"]
    assert framer.pending == 2
    assert framer.flush(b"-") == b"ij--"
    assert framer.flush(b"-") is None


def test_default_pad_is_ulaw_silence() -> None:
    # 0xff is μ-law zero; 0x00 would be the loudest negative sample.
    assert split_frames(b"\x10" * 5, 4) == [b"\x10" * 4, b"\x10\xff\xff\xff"]
    framer = Framer(frames.ULAW_FRAME_BYTES)
    framer.push(b"\x01")
    assert framer.flush() == b"\x01" + b"\xff" * 159


def test_multi_byte_pad_is_repeated_and_cut_to_fit() -> None:
    assert split_frames(b"ab", 7, pad=b"xy") == [b"abxyxyx"]


def test_clear_drops_the_held_back_tail() -> None:
    framer = Framer(4)
    framer.push(b"abcdef")
    framer.clear()
    assert framer.pending == 0
    assert framer.push(b"1234") == [b"1234"]


def test_empty_input_gives_no_frames() -> None:
    assert split_frames(b"", 160) == []


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="frame_bytes must be positive"):
        Framer(0)
    with pytest.raises(ValueError, match="pad must be at least one byte"):
        split_frames(b"a", 4, pad=b"")


def test_framer_hands_out_bytes_for_a_bytearray() -> None:
    framer = Framer(4)
    frames = framer.push(bytearray(b"abcdefghij"))
    assert frames == [b"abcd", b"efgh"] and all(type(f) is bytes for f in frames)
    assert framer.pending == 2
    assert framer.push(bytearray(b"kl")) == [b"ijkl"]
