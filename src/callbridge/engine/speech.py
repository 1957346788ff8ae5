"""Turns per-frame VAD decisions into speech runs and silences measured in audio time.

Audio time (frames × 20 ms), not arrival time, measures how long the caller spoke: a
bad network delivers frames in bursts, and a burst must not look like a short blip.
Arrival time only dates the onset, so a decision taken long after the caller started
can be recognised as stale.
"""

from __future__ import annotations

__all__ = ["SpeechTracker"]


class SpeechTracker:
    def __init__(self, *, gap_tolerance_ms: int = 60) -> None:
        self._gap_tolerance_ms = gap_tolerance_ms
        self.run_ms = 0  # length of the current speech run (0: none), short dips included
        self.silence_ms = 0  # trailing non-speech audio
        self.onset_at: float | None = None  # clock time the current run started
        self.run_id = 0  # increments with every new run
        self._audio_ms = 0
        self._offset: float | None = None  # min(arrival - audio time): the network's best case

    def update(
        self, is_speech: bool, frame_ms: int, arrival: float, timestamp_ms: int | None
    ) -> None:
        stamp_ms = self._audio_ms if timestamp_ms is None else timestamp_ms
        self._audio_ms += frame_ms
        offset = arrival - stamp_ms / 1000
        if self._offset is None or offset < self._offset:
            self._offset = offset
        if is_speech:
            if self.run_ms == 0:
                self.run_id += 1
                self.onset_at = self._offset + stamp_ms / 1000
                self.run_ms = frame_ms
            else:
                self.run_ms += self.silence_ms + frame_ms
            self.silence_ms = 0
            return
        self.silence_ms += frame_ms
        if self.silence_ms > self._gap_tolerance_ms:
            self.run_ms = 0
            self.onset_at = None
