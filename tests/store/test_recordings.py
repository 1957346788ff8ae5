"""Stereo call recordings on one timeline, written incrementally (manual clock)."""

from __future__ import annotations

import os
import time
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from callbridge.audio import ulaw
from callbridge.clock import ManualClock
from callbridge.store.recordings import CallRecording, purge_recordings, recording_path

FRAME = 160  # 20 ms of μ-law
CALLER_CODE, BOT_CODE = 0x10, 0xA0


def level(code: int) -> int:
    return int(np.frombuffer(ulaw.decode(bytes([code])), "<i2")[0])


def channels(path: Path) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    return data[:, 0], data[:, 1]


def test_both_legs_land_where_they_were_heard(tmp_path: Path) -> None:
    clock = ManualClock(100.0)
    rec = CallRecording(tmp_path / "call.wav", clock=clock)
    for i in range(100):  # 2 s of caller, Twilio timestamps starting at 40 ms
        if i == 10:
            # 200 ms in, the bot starts: 10 frames at once (the send-ahead lead)…
            for _ in range(10):
                rec.bot_audio(bytes([BOT_CODE]) * FRAME)
        elif 10 < i < 40:
            rec.bot_audio(bytes([BOT_CODE]) * FRAME)  # …then one per 20 ms
        if i == 40:
            rec.bot_cleared()  # barge-in at 800 ms: the 200 ms queued ahead never played
        rec.caller_audio(bytes([CALLER_CODE]) * FRAME, timestamp_ms=40 + 20 * i)
        clock.advance(0.02)
    rec.close()
    caller, bot = channels(tmp_path / "call.wav")
    assert len(caller) == 100 * FRAME  # anchored at the first frame's arrival
    assert np.all(caller == level(CALLER_CODE))
    start, cleared = 10 * FRAME, 40 * FRAME
    assert np.all(bot[:start] == 0)
    assert np.all(bot[start:cleared] == level(BOT_CODE))  # contiguous, not stacked at t=200ms
    assert np.all(bot[cleared:] == 0)


def test_the_file_is_playable_during_the_call(tmp_path: Path) -> None:
    """What a kill -9 would leave: a valid WAV missing at most flush + settle time."""
    clock = ManualClock()
    rec = CallRecording(tmp_path / "live.wav", clock=clock, flush_ms=500, settle_ms=500)
    for i in range(150):  # 3 s
        rec.caller_audio(bytes([CALLER_CODE]) * FRAME, timestamp_ms=20 * i)
        clock.advance(0.02)
    caller, _ = channels(tmp_path / "live.wav")
    assert 3.0 - 1.0 <= len(caller) / 8000 <= 3.0 - 0.5
    assert np.all(caller == level(CALLER_CODE))
    rec.close()
    caller, _ = channels(tmp_path / "live.wav")
    assert len(caller) == 150 * FRAME


def test_jitter_is_absorbed_and_too_late_frames_are_counted(tmp_path: Path) -> None:
    clock = ManualClock()
    rec = CallRecording(tmp_path / "j.wav", clock=clock, flush_ms=200, settle_ms=200)
    rec.caller_audio(bytes([CALLER_CODE]) * FRAME, timestamp_ms=0)
    clock.advance(0.3)
    rec.caller_audio(bytes([CALLER_CODE]) * FRAME, timestamp_ms=40)  # 260 ms late: still fits
    clock.advance(1.0)
    rec.caller_audio(bytes([0x20]) * FRAME, timestamp_ms=1300)  # flushes up to ~1.1 s
    rec.caller_audio(bytes([0x30]) * FRAME, timestamp_ms=60)  # 1.2 s late: on disk already
    rec.close()
    caller, _ = channels(tmp_path / "j.wav")
    assert rec.late_frames == 1
    assert np.all(caller[320:480] == level(CALLER_CODE))
    assert not np.any(caller == level(0x30))


def test_caller_timestamps_that_jump_back_reanchor(tmp_path: Path) -> None:
    clock = ManualClock()
    rec = CallRecording(tmp_path / "r.wav", clock=clock)
    rec.caller_audio(bytes([CALLER_CODE]) * FRAME, timestamp_ms=50_000)
    clock.advance(0.02)
    rec.caller_audio(bytes([CALLER_CODE]) * FRAME, timestamp_ms=0)  # a reset, not -50 s
    rec.close()
    caller, _ = channels(tmp_path / "r.wav")
    assert len(caller) == 2 * FRAME and np.all(caller == level(CALLER_CODE))


def test_recording_path_is_safe() -> None:
    assert recording_path(Path("/r"), "CA12/../x") == Path("/r/CA12____x.wav")


def test_retention_deletes_only_old_recordings(tmp_path: Path) -> None:
    old, new, other = tmp_path / "old.wav", tmp_path / "new.wav", tmp_path / "notes.txt"
    for path in (old, new, other):
        path.write_bytes(b"x")
    now = time.time()
    os.utime(old, (now - 8 * 86400, now - 8 * 86400))
    os.utime(other, (now - 8 * 86400, now - 8 * 86400))
    assert purge_recordings(tmp_path, 0, now=now) == 0  # 0 = keep forever
    assert purge_recordings(tmp_path, 7, now=now) == 1
    assert not old.exists() and new.exists() and other.exists()
    assert purge_recordings(tmp_path / "missing", 7) == 0


def test_a_first_frame_read_late_does_not_delay_the_callers_leg(tmp_path: Path) -> None:
    """At call start the first frames wait while the call sets up (vendor sockets, the
    greeting), then arrive at once: the leg is placed by the frame that came soonest
    after its timestamp, so the caller is heard when they spoke, not 200 ms later."""
    clock = ManualClock()
    rec = CallRecording(tmp_path / "late.wav", clock=clock)
    clock.advance(0.2)
    for i in range(10):  # 200 ms of audio, all read at t = 200 ms
        rec.caller_audio(bytes([CALLER_CODE]) * FRAME, timestamp_ms=20 * i)
    for i in range(10, 50):  # then in real time
        clock.advance(0.02)
        rec.caller_audio(bytes([0x20 if i == 30 else CALLER_CODE]) * FRAME, timestamp_ms=20 * i)
    rec.bot_audio(bytes([BOT_CODE]) * FRAME)  # the bot at t = 1.0 s, where it was sent
    rec.close()
    caller, bot = channels(tmp_path / "late.wav")
    # The soonest any frame came was 20 ms after its timestamp (frame 9, read at 200 ms):
    # the leg starts there, not at 200 ms.
    spoken = caller[FRAME : 51 * FRAME]
    assert np.all(caller[:FRAME] == 0)
    assert np.all(spoken[np.arange(50 * FRAME) // FRAME != 30] == level(CALLER_CODE))
    assert np.all(spoken[30 * FRAME : 31 * FRAME] == level(0x20))  # said at 600 ms
    assert np.flatnonzero(bot)[0] == 50 * FRAME  # the bot where it was sent, at 1.0 s
