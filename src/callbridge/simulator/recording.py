"""Both legs of a simulated call as one stereo WAV: caller left, bot right.

Each leg is placed by its own clock time (caller frames when sent, bot audio when the
playback model played it), so the file shows exactly the overlap and the gaps a caller
would hear, including bot audio cut by ``clear``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from callbridge.audio import ulaw
from callbridge.audio.wav import write_wav

__all__ = ["Recorder"]

_RATE_HZ = 8000


class Recorder:
    def __init__(self, t0_s: float) -> None:
        self._t0 = t0_s
        self._caller: list[tuple[float, bytes]] = []
        self._bot: list[tuple[float, bytes]] = []

    def caller(self, at_s: float, ulaw_audio: bytes) -> None:
        self._caller.append((at_s, ulaw_audio))

    def bot(self, at_s: float, ulaw_audio: bytes) -> None:
        self._bot.append((at_s, ulaw_audio))

    def bot_ulaw(self) -> bytes:
        """The bot leg as played, gaps left out (to compare with what was sent)."""
        return b"".join(audio for _, audio in self._bot)

    def stereo_pcm16(self) -> bytes:
        """Interleaved PCM16LE, left = caller, right = bot."""
        left = self._place(self._caller)
        right = self._place(self._bot)
        n = max(len(left), len(right))
        out = np.zeros((n, 2), dtype="<i2")
        out[: len(left), 0] = left
        out[: len(right), 1] = right
        return out.tobytes()

    def write(self, path: str | Path) -> None:
        write_wav(path, self.stereo_pcm16(), _RATE_HZ, channels=2)

    def _place(self, pieces: list[tuple[float, bytes]]) -> np.ndarray:
        if not pieces:
            return np.zeros(0, dtype="<i2")
        spans = [(max(0, round((t - self._t0) * _RATE_HZ)), audio) for t, audio in pieces]
        n = max(start + len(audio) for start, audio in spans)
        track = np.zeros(n, dtype="<i2")
        for start, audio in spans:
            track[start : start + len(audio)] = np.frombuffer(ulaw.decode(audio), dtype="<i2")
        return track
