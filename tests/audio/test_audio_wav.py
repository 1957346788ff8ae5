"""WAV in and out; a recording must stay playable if the process dies mid-call."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest

from callbridge.audio.levels import tone
from callbridge.audio.wav import IncrementalWavWriter, WavFormatError, read_wav, write_wav


def pcm(*samples: int) -> bytes:
    return np.array(samples, "<i2").tobytes()


def raw_wav(path: Path, frames: bytes, *, width: int, channels: int = 1, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return path


def read_with_wave(path: Path) -> tuple[bytes, int, int, int]:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes()), w.getnchannels(), w.getsampwidth(), w.getframerate()


def test_mono_round_trip(tmp_path: Path) -> None:
    audio = tone(440.0, 250, -12.0, rate_hz=16000)
    write_wav(tmp_path / "a.wav", audio, 16000)
    assert read_wav(tmp_path / "a.wav") == (audio, 16000)


def test_write_multichannel_interleaved(tmp_path: Path) -> None:
    interleaved = pcm(1, -1, 2, -2, 3, -3)
    write_wav(tmp_path / "s.wav", interleaved, 8000, channels=2)
    assert read_with_wave(tmp_path / "s.wav") == (interleaved, 2, 2, 8000)


def test_stereo_is_averaged_to_mono(tmp_path: Path) -> None:
    write_wav(tmp_path / "s.wav", pcm(100, -300, 32767, 32767, -32768, -32768, 1, 2), 8000, 2)
    mono, rate = read_wav(tmp_path / "s.wav")
    assert rate == 8000
    assert np.frombuffer(mono, "<i2").tolist() == [-100, 32767, -32768, 1]


def test_8_bit_is_unsigned(tmp_path: Path) -> None:
    path = raw_wav(tmp_path / "u8.wav", bytes([0, 128, 255]), width=1)
    assert np.frombuffer(read_wav(path)[0], "<i2").tolist() == [-32768, 0, 32512]


def test_24_and_32_bit_keep_the_top_16_bits(tmp_path: Path) -> None:
    p24 = raw_wav(tmp_path / "24.wav", b"\x56\x34\x12" + b"\xff\xff\xff" + b"\x00\x00\x80", width=3)
    assert np.frombuffer(read_wav(p24)[0], "<i2").tolist() == [0x1234, -1, -32768]
    p32 = raw_wav(tmp_path / "32.wav", struct.pack("<3i", 0x12345678, -65536, 2**31 - 1), width=4)
    assert np.frombuffer(read_wav(p32)[0], "<i2").tolist() == [0x1234, -1, 32767]


def test_float_wav_is_refused_clearly(tmp_path: Path) -> None:
    data = struct.pack("<2f", 0.5, -0.5)
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)  # WAVE_FORMAT_IEEE_FLOAT
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path = tmp_path / "f.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(WavFormatError, match="not a PCM WAV"):
        read_wav(path)


def test_garbage_and_truncated_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "g.wav").write_bytes(b"ID3\x04 this is an mp3")
    with pytest.raises(WavFormatError):
        read_wav(tmp_path / "g.wav")
    (tmp_path / "t.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    with pytest.raises(WavFormatError):
        read_wav(tmp_path / "t.wav")
    assert issubclass(WavFormatError, ValueError)


def test_write_rejects_partial_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 4 bytes"):
        write_wav(tmp_path / "x.wav", b"\x00" * 6, 8000, channels=2)


def test_incremental_header_is_valid_after_every_write(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    writer = IncrementalWavWriter(path, 8000, 1)
    assert read_with_wave(path) == (b"", 1, 2, 8000)  # valid (empty) before any audio
    written = b""
    for i in range(3):
        chunk = tone(300.0 + 100 * i, 20, -10.0)
        writer.write(chunk)
        written += chunk
        # Not closed: another reader must see exactly what was written so far.
        assert read_with_wave(path) == (written, 1, 2, 8000)
    assert writer.duration_ms == 60
    assert writer.data_bytes == len(written)
    writer.close()
    writer.close()
    assert writer.closed
    assert read_wav(path) == (written, 8000)


def test_incremental_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "killed.wav"
    script = textwrap.dedent(
        f"""
        import os, signal
        from callbridge.audio.levels import tone
        from callbridge.audio.wav import IncrementalWavWriter
        w = IncrementalWavWriter({str(path)!r}, 8000, 2)
        for _ in range(5):
            w.write(tone(440.0, 20, -6.0) * 2)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert proc.returncode == -9  # really killed, never closed
    frames, channels, width, rate = read_with_wave(path)
    assert (channels, width, rate) == (2, 2, 8000)
    assert frames == (tone(440.0, 20, -6.0) * 2) * 5
    assert os.path.getsize(path) == 44 + len(frames)


def test_incremental_misuse(tmp_path: Path) -> None:
    with IncrementalWavWriter(tmp_path / "m.wav", 8000, 2) as writer:
        with pytest.raises(ValueError, match="multiple of 4 bytes"):
            writer.write(b"\x00\x00")
        writer.write(b"")
    with pytest.raises(ValueError, match="write after close"):
        writer.write(b"\x00" * 4)
    with pytest.raises(ValueError, match="rate_hz"):
        IncrementalWavWriter(tmp_path / "z.wav", 0, 1)
