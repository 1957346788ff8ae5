"""Resampling keeps duration and pitch; same-rate audio never touches soxr."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.audio import resample as rs
from callbridge.audio.levels import tone
from callbridge.audio.resample import StreamResampler, resample


def peak_hz(pcm16: bytes, rate_hz: int) -> float:
    x = np.frombuffer(pcm16, "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / rate_hz)[int(np.argmax(spectrum))])


def test_one_second_at_22050_becomes_8000_samples() -> None:
    out = resample(tone(440.0, 1000, -6.0, rate_hz=22050), 22050, 8000)
    assert abs(len(out) // 2 - 8000) <= 1


@pytest.mark.parametrize(("src_hz", "dst_hz"), [(22050, 8000), (24000, 8000), (8000, 16000)])
def test_one_shot_keeps_the_pitch(src_hz: int, dst_hz: int) -> None:
    out = resample(tone(440.0, 1000, -6.0, rate_hz=src_hz), src_hz, dst_hz)
    assert abs(peak_hz(out, dst_hz) - 440.0) <= 2.0


def test_same_rate_is_passthrough_without_soxr(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("soxr must not be used for same-rate audio")

    monkeypatch.setattr(soxr, "resample", boom)
    monkeypatch.setattr(soxr, "ResampleStream", boom)
    pcm = tone(300.0, 40, -10.0)
    assert resample(pcm, 8000, 8000) == pcm
    stream = StreamResampler(8000, 8000)
    assert stream.process(pcm[:101]) + stream.process(pcm[101:]) == pcm
    assert stream.flush() == b""


def test_stream_emits_everything_by_flush_and_keeps_pitch() -> None:
    src = tone(440.0, 1000, -6.0, rate_hz=24000)
    stream = StreamResampler(24000, 8000)
    out = bytearray()
    emitted_nothing_once = False
    # Odd byte counts on purpose: network reads split samples.
    for i in range(0, len(src), 1001):
        piece = stream.process(src[i : i + 1001])
        emitted_nothing_once |= piece == b""
        out += piece
    out += stream.flush()
    assert emitted_nothing_once, "soxr HQ holds samples back; process() must allow b''"
    assert len(out) % 2 == 0
    assert abs(len(out) // 2 - 8000) <= 2
    assert abs(peak_hz(bytes(out), 8000) - 440.0) <= 2.0


def test_stream_matches_one_shot_closely() -> None:
    src = tone(1000.0, 500, -6.0, rate_hz=16000)
    stream = StreamResampler(16000, 8000)
    streamed = b"".join(stream.process(src[i : i + 640]) for i in range(0, len(src), 640))
    streamed += stream.flush()
    whole = resample(src, 16000, 8000)
    a = np.frombuffer(streamed, "<i2").astype(np.float64)
    b = np.frombuffer(whole, "<i2").astype(np.float64)
    n = min(len(a), len(b))
    assert abs(len(a) - len(b)) <= 2
    # Same filter, so apart from the edges the two agree to a few LSB.
    assert float(np.max(np.abs(a[50 : n - 50] - b[50 : n - 50]))) <= 4.0


def test_stream_is_reusable_after_flush() -> None:
    stream = StreamResampler(16000, 8000)
    first = stream.process(tone(440.0, 200, -6.0, 16000)) + stream.flush()
    second = stream.process(tone(440.0, 200, -6.0, 16000)) + stream.flush()
    assert first == second


def test_reset_discards_buffered_audio() -> None:
    stream = StreamResampler(16000, 8000)
    stream.process(tone(440.0, 100, -6.0, 16000) + b"\x01")
    stream.reset()
    assert stream.flush() == b""


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(0, 3200), max_size=8))
def test_chunking_does_not_change_passthrough_output(cuts: list[int]) -> None:
    pcm = tone(200.0, 200, -3.0)
    stream = StreamResampler(8000, 8000)
    bounds = [0, *sorted(cuts), len(pcm)]
    out = b"".join(stream.process(pcm[a:b]) for a, b in itertools.pairwise(bounds))
    assert out == pcm


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        resample(b"\x00\x00\x00", 16000, 8000)
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 8000)
    with pytest.raises(ValueError, match="quality"):
        resample(b"", 16000, 8000, quality="best")


def test_empty_input() -> None:
    assert resample(b"", 24000, 8000) == b""
    assert StreamResampler(24000, 8000).process(b"") == b""
    assert rs.DEFAULT_QUALITY == "HQ"
