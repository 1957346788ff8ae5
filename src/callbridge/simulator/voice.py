"""The caller's voice: text (espeak-ng) or a WAV, prepared before the call starts.

Everything per frame is done here, ahead of time (μ-law, base64, voiced or not), so the
send loop does no audio work while the call runs: a load test of 200 callers must
measure the server, not the callers. Voiced frames mark the speech onset and end that
the turn metrics are timed from.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from callbridge.audio import levels, ulaw
from callbridge.audio.frames import PCM_FRAME_BYTES, PCM_SILENCE, ULAW_FRAME_BYTES, split_frames
from callbridge.audio.resample import resample
from callbridge.audio.wav import read_wav

__all__ = [
    "SILENCE",
    "VOICED_DBFS",
    "Utterance",
    "from_pcm",
    "from_text",
    "from_wav",
    "is_audible",
]

VOICED_DBFS = -45.0
"""Frames louder than this count as speech (the caller's) or as bot audio heard."""

_RATE_HZ = 8000
_SILENT_ULAW = ulaw.SILENCE * ULAW_FRAME_BYTES


@dataclass(frozen=True, slots=True)
class Utterance:
    """20 ms μ-law frames with their base64 payloads; onset/end index the voiced span."""

    label: str
    frames: tuple[bytes, ...]
    payloads: tuple[str, ...]
    onset_index: int | None
    end_index: int | None

    @property
    def duration_ms(self) -> int:
        return 20 * len(self.frames)


SILENCE = Utterance(
    "silence", (_SILENT_ULAW,), (base64.b64encode(_SILENT_ULAW).decode(),), None, None
)


def from_pcm(pcm16: bytes, rate_hz: int, label: str) -> Utterance:
    if rate_hz != _RATE_HZ:
        pcm16 = resample(pcm16, rate_hz, _RATE_HZ)
    pcm_frames = split_frames(pcm16, PCM_FRAME_BYTES, PCM_SILENCE) if pcm16 else []
    frames = tuple(ulaw.encode(f) for f in pcm_frames)
    # Judged on the line's μ-law, exactly as bot audio is judged when it comes back.
    voiced = [is_audible(f) for f in frames]
    onset = voiced.index(True) if any(voiced) else None
    end = len(voiced) - 1 - voiced[::-1].index(True) if onset is not None else None
    payloads = tuple(base64.b64encode(f).decode() for f in frames)
    return Utterance(label, frames, payloads, onset, end)


def from_text(text: str, voice: str = "en-us") -> Utterance:
    """Blocking (espeak-ng runs in this thread): call it before the call, not during."""
    from callbridge.providers.tts.espeak import synthesize_pcm

    return from_pcm(synthesize_pcm(text, _RATE_HZ, voice), _RATE_HZ, text)


def from_wav(path: str | Path) -> Utterance:
    pcm16, rate_hz = read_wav(path)
    return from_pcm(pcm16, rate_hz, Path(path).name)


def is_audible(ulaw_audio: bytes) -> bool:
    """Would a caller hear this? (Bot audio of digital silence is not a reply.)"""
    return levels.rms_dbfs(ulaw.decode(ulaw_audio)) > VOICED_DBFS
