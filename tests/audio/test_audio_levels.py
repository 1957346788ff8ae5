"""Levels: dBFS per AES17, so a tone made at X dBFS measures X dBFS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from callbridge.audio.levels import SILENCE_DBFS, rms_dbfs, tone


def test_digital_silence_and_empty_read_the_floor() -> None:
    assert rms_dbfs(b"\x00" * 320) == SILENCE_DBFS == -120.0
    assert rms_dbfs(b"") == SILENCE_DBFS


@pytest.mark.parametrize("dbfs", [0.0, -6.0, -20.0, -45.0])
def test_tone_measures_its_own_level(dbfs: float) -> None:
    assert rms_dbfs(tone(400.0, 1000, dbfs)) == pytest.approx(dbfs, abs=0.05)


def test_full_scale_square_reads_plus_3db() -> None:
    square = np.array([-32768, 32767] * 80, "<i2").tobytes()
    assert rms_dbfs(square) == pytest.approx(20 * math.log10(math.sqrt(2)), abs=0.01)


def test_one_lsb_is_quiet_but_above_the_floor() -> None:
    level = rms_dbfs(np.ones(160, "<i2").tobytes())
    assert level == pytest.approx(20 * math.log10(math.sqrt(2) / 32768), abs=0.01)
    assert level > SILENCE_DBFS


def test_tone_length_rate_and_frequency() -> None:
    pcm = tone(1000.0, 20, -10.0)
    assert len(pcm) == 320
    x = np.frombuffer(tone(1000.0, 1000, -10.0, rate_hz=16000), "<i2").astype(float)
    assert len(x) == 16000
    assert int(np.argmax(np.abs(np.fft.rfft(x)))) == 1000  # 1 Hz bins over 1 s
    assert x[0] == 0.0  # phase 0, so concatenated test clips have no click at the start


def test_tone_is_clipped_not_wrapped() -> None:
    x = np.frombuffer(tone(100.0, 100, 6.0), "<i2")
    assert int(x.max()) == 32767
    assert int(x.min()) == -32768


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        rms_dbfs(b"\x00")
    with pytest.raises(ValueError, match="freq_hz"):
        tone(4000.0, 20, -10.0)
    with pytest.raises(ValueError, match="ms must be"):
        tone(400.0, -1, -10.0)


def test_ulaw_level_matches_the_decoded_pcm_level() -> None:
    from callbridge.audio import ulaw
    from callbridge.audio.levels import ulaw_rms_dbfs

    for dbfs in (-3.0, -20.0, -45.0):
        coded = ulaw.encode(tone(440, 20, dbfs))
        assert abs(ulaw_rms_dbfs(coded) - rms_dbfs(ulaw.decode(coded))) < 1e-9
    assert ulaw_rms_dbfs(b"\xff" * 160) == SILENCE_DBFS
    assert ulaw_rms_dbfs(b"") == SILENCE_DBFS


def test_frame_levels_of_many_frames_are_exactly_each_frames_rms_dbfs() -> None:
    """The metronome's batched levels (one numpy pass for every call's frames) read
    exactly what ``rms_dbfs`` reads frame by frame: the speech tracker compares them."""
    from callbridge.audio import ulaw
    from callbridge.audio.levels import pcm_frame_levels, ulaw_frame_levels

    rng = np.random.default_rng(5)
    frames = [rng.integers(-32768, 32768, 160, dtype=np.int16) for _ in range(300)]
    frames += [rng.integers(-a, a + 1, 160, dtype=np.int16) for a in (1, 2, 3, 8, 100)]
    frames += [np.zeros(160, np.int16), np.full(160, -32768, np.int16), np.full(160, 32767,
               np.int16), np.full(160, -1, np.int16)]  # silence, full scale, one LSB
    pcm = np.concatenate(frames)
    got = pcm_frame_levels(pcm, 160)
    assert got == [rms_dbfs(frame.tobytes()) for frame in frames]  # exactly, not approximately
    codes = np.frombuffer(ulaw.encode(pcm.tobytes()), np.uint8)
    decoded = [ulaw.decode(codes[i : i + 160].tobytes()) for i in range(0, len(codes), 160)]
    assert ulaw_frame_levels(codes, 160) == [rms_dbfs(frame) for frame in decoded]
    with pytest.raises(ValueError):
        pcm_frame_levels(pcm[:100], 160)
