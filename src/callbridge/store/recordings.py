"""Call recordings: one stereo WAV per call, caller left, bot right, on one timeline.

How it works: both legs are laid into a small in-memory window of μ-law samples (two
bytes per sample instant, silence where nobody spoke). The caller's frames go where
their Twilio timestamps put them (anchored to our clock by the frame that arrived
soonest after its timestamp, so a first frame read late does not delay the leg); the bot's
go where they start playing: the bot is paced in real time but sent up to
``send_ahead_ms`` early, so each frame starts when the previous one ends, or now if the
line was quiet. A ``clear`` wipes the bot audio not yet played. Every ``flush_ms`` the
part of the window older than ``settle_ms`` (late caller frames still land in it) is
decoded to PCM16 and appended to an ``IncrementalWavWriter``, whose header is valid
after every write: a crash loses at most ``flush_ms + settle_ms`` of audio, and a frame
costs a slice assignment, not a disk write.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from callbridge.audio import ulaw
from callbridge.audio.playhead import PlayHead
from callbridge.audio.wav import IncrementalWavWriter
from callbridge.clock import Clock, MonotonicClock

__all__ = ["RATE_HZ", "CallRecording", "purge_recordings", "recording_path"]

log = logging.getLogger(__name__)

RATE_HZ = 8000
CALLER, BOT = 0, 1
_REANCHOR_MS = 2000  # a caller timestamp this far from our clock is a reset, not jitter
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


def recording_path(directory: Path, call_sid: str) -> Path:
    return directory / f"{_SAFE_NAME.sub('_', call_sid) or 'call'}.wav"


class CallRecording:
    def __init__(
        self,
        path: Path,
        *,
        clock: Clock | None = None,
        flush_ms: int = 500,
        settle_ms: int = 500,
    ) -> None:
        self.path = path
        self._clock = clock or MonotonicClock()
        self._t0 = self._clock.now()
        self._flush_samples = flush_ms * RATE_HZ // 1000
        self._settle_samples = settle_ms * RATE_HZ // 1000
        path.parent.mkdir(parents=True, exist_ok=True)
        self._wav = IncrementalWavWriter(path, RATE_HZ, channels=2)
        # Interleaved μ-law, caller then bot per sample instant: a frame is one strided
        # slice assignment (in C), and a flush is one decode of the leading bytes.
        self._window = bytearray(ulaw.SILENCE * (RATE_HZ * 2 * 2))
        self._base = 0  # timeline sample at window[0]; everything before it is on disk
        self._end = 0  # one past the last sample either leg has written
        self._caller_end = 0
        self._bot = PlayHead(0)  # where the bot's audio plays, in samples
        self._anchor: int | None = None  # our sample minus the caller's timestamp sample
        self.late_frames = 0

    @property
    def duration_ms(self) -> int:
        return self._wav.duration_ms

    def caller_audio(self, data: bytes, timestamp_ms: int | None) -> None:
        now = self._now()
        if timestamp_ms is None:
            start = now
        else:
            stamp = timestamp_ms * RATE_HZ // 1000
            if self._anchor is None or abs(stamp + self._anchor - now) > _REANCHOR_MS * 8:
                self._anchor = now - stamp
            elif now - stamp < self._anchor:
                # This frame came sooner after its timestamp than the first one did: the
                # first was read late (the call was still starting: sockets to the
                # vendors, the greeting). Move the caller's leg back to where it was said.
                self._caller_earlier(self._anchor - (now - stamp))
                self._anchor = now - stamp
            start = stamp + self._anchor
        if start < self._base:
            self.late_frames += 1  # already on disk: a crash-safe file beats a perfect one
            return
        self._put(CALLER, start, data)
        self._caller_end = max(self._caller_end, start + len(data))
        self._maybe_flush(now)

    def _caller_earlier(self, samples: int) -> None:
        """Shift the caller's leg not yet on disk ``samples`` earlier on the timeline."""
        leg = self._window[CALLER::2]
        samples = min(samples, len(leg))
        self._window[CALLER::2] = leg[samples:] + ulaw.SILENCE * samples
        self._caller_end = max(self._base, self._caller_end - samples)

    def bot_audio(self, data: bytes) -> None:
        now = self._now()
        start = self._bot.queue(max(now, self._base), len(data))
        self._put(BOT, start, data)
        self._maybe_flush(now)

    def bot_cleared(self) -> None:
        """The far end dropped its buffer: bot audio after now was never heard."""
        now = max(self._now(), self._base)
        unplayed = self._bot.clear(now)
        if unplayed:
            lo = 2 * (now - self._base) + BOT
            self._window[lo : lo + 2 * unplayed : 2] = ulaw.SILENCE * unplayed
            self._end = max(self._caller_end, now)

    def close(self) -> None:
        """Write everything either leg put on the timeline, and close the file."""
        if self._wav.closed:
            return
        self._write_until(self._end)
        self._wav.close()

    def _now(self) -> int:
        return round((self._clock.now() - self._t0) * RATE_HZ)

    def _put(self, channel: int, start: int, data: bytes) -> None:
        end = start + len(data)
        self._reserve(end)
        offset = 2 * (start - self._base) + channel
        self._window[offset : offset + 2 * len(data) : 2] = data
        self._end = max(self._end, end)

    def _reserve(self, end: int) -> None:
        missing = 2 * (end - self._base) - len(self._window)
        if missing > 0:
            self._window.extend(ulaw.SILENCE * max(missing, len(self._window)))

    def _maybe_flush(self, now: int) -> None:
        if now - self._settle_samples - self._base >= self._flush_samples:
            self._write_until(now - self._settle_samples)

    def _write_until(self, until: int) -> None:
        count = until - self._base
        if count <= 0:
            return
        self._reserve(until)
        self._wav.write(ulaw.decode(bytes(self._window[: 2 * count])))
        del self._window[: 2 * count]
        self._base = until


def purge_recordings(directory: Path, retention_days: float, *, now: float | None = None) -> int:
    """Delete recordings older than ``retention_days`` (0 keeps everything); returns count.

    By file age, so a recording whose call row never got written (a crash at the wrong
    moment) is cleaned up too; the API reports a recording whose file is gone as absent.
    """
    if retention_days <= 0 or not directory.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    removed = 0
    for path in directory.glob("*.wav"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    if removed:
        log.info("recordings.purged count=%d retention_days=%g", removed, retention_days)
    return removed
