"""Turns per-frame VAD decisions into speech runs and silences measured in audio time.

Audio time (frames × 20 ms), not arrival time, measures how long the caller spoke: a
bad network delivers frames in bursts, and a burst must not look like a short blip.
Arrival time only dates the onset, so a decision taken long after the caller started
can be recognised as stale.

A model VAD confirms speech some 40–120 ms after it began (Silero needs a window or
three of evidence). Counting the barge-in debounce from that confirmation would add the
model's lag to every interruption, so when a run is confirmed its onset is moved back
over the loud frames just before it (energy above the line's noise floor, at most
``backdate_max_ms``): the run measures how long the caller has really been talking,
while the model alone still decides whether it is speech.

The end is the mirror image: the model keeps saying "speech" ~100 ms after the caller
went quiet (measured: Silero at 8 kHz, 5 frames after the last voiced one). When it
finally says silence, the silence is dated back over the quiet frames just before
(at most ``backdate_max_ms``), so endpointing, ``Finalize`` and speculation count the
caller's real silence, not the model's lag.
"""

from __future__ import annotations

__all__ = ["SpeechTracker"]

# The noise floor follows a quieter line at once and a louder one slowly.
_FLOOR_RISE_DB_PER_FRAME = 0.02


class SpeechTracker:
    def __init__(
        self,
        *,
        gap_tolerance_ms: int = 60,
        backdate_max_ms: int = 160,
        loud_margin_db: float = 12.0,
        loud_min_dbfs: float = -55.0,
    ) -> None:
        self._gap_tolerance_ms = gap_tolerance_ms
        self._backdate_max_ms = backdate_max_ms
        self._loud_margin_db = loud_margin_db
        self._loud_min_dbfs = loud_min_dbfs
        self.run_ms = 0  # length of the current speech run (0: none), short dips included
        self.silence_ms = 0  # trailing non-speech audio
        self.onset_at: float | None = None  # clock time the current run started
        self.run_id = 0  # increments with every new run
        # The latest silence after speech, for the turn's hop marks (``replies.py``):
        # when it began (dated back like ``silence_ms``) and when the model said so.
        self.silence_at: float | None = None
        self.silence_seen_at: float | None = None
        self._audio_ms = 0
        self._offset: float | None = None  # min(arrival - audio time): the network's best case
        self._floor_dbfs = -60.0
        self._loud_ms = 0  # loud audio just before the current frame
        self._quiet_ms = 0  # quiet audio just before the current frame

    def update(
        self,
        is_speech: bool,
        level_dbfs: float,
        frame_ms: int,
        arrival: float,
        timestamp_ms: int | None,
    ) -> None:
        stamp_ms = self._audio_ms if timestamp_ms is None else timestamp_ms
        self._audio_ms += frame_ms
        offset = arrival - stamp_ms / 1000
        if self._offset is None or offset < self._offset:
            self._offset = offset
        loud_before, quiet_before = self._loud_ms, self._quiet_ms
        # The line's level (inline, not a call: every call's every frame comes here).
        floor = self._floor_dbfs
        loud_line = floor + self._loud_margin_db
        if loud_line < self._loud_min_dbfs:
            loud_line = self._loud_min_dbfs
        if level_dbfs > loud_line:
            self._loud_ms = loud_before + frame_ms
            self._quiet_ms = 0
        else:
            self._loud_ms = 0
            self._quiet_ms = quiet_before + frame_ms
        if level_dbfs < floor:  # the floor follows a quieter line at once, a louder slowly
            self._floor_dbfs = level_dbfs
        else:
            risen = floor + _FLOOR_RISE_DB_PER_FRAME
            self._floor_dbfs = level_dbfs if level_dbfs < risen else risen
        if is_speech:
            if self.run_ms == 0:
                back_ms = min(loud_before, self._backdate_max_ms)
                self.run_id += 1
                self.onset_at = self._offset + (stamp_ms - back_ms) / 1000
                self.run_ms = frame_ms + back_ms
            else:
                self.run_ms += self.silence_ms + frame_ms
            self.silence_ms = 0
            return
        if self.silence_ms == 0 and self.run_ms > 0:
            # The model's first "silence" of this run: the caller fell quiet earlier.
            back_ms = min(quiet_before, self._backdate_max_ms)
            self.silence_ms = back_ms
            self.silence_at = self._offset + (stamp_ms - back_ms) / 1000
            self.silence_seen_at = arrival
        self.silence_ms += frame_ms
        if self.silence_ms > self._gap_tolerance_ms:
            self.run_ms = 0
            self.onset_at = None
