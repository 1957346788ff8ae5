"""The caller's side as facts: frames and transcripts in; speech runs, words and the
silence that would end a turn out.

A frame's way through: the metronome's pass (``frontend.py``) has decoded it, measured
its level and, for a VAD that batches, scored it with every call's; ``hear_pcm`` asks
the VAD if it was not, and updates the speech run (``speech.py``: onset, run length,
trailing silence). ``hear_frame`` is the same for one frame fed by hand (decoded and
measured here). Transcripts update the words (``words.py``). Everything here is a pure
function of what the caller did: it starts no reply and changes no phase. The engine's
rules (``listening.py``) read these facts and decide; the only outputs are the two
questions it may ask once per silence (the transcriber's final words, the end-of-turn
model's verdict).
"""

from __future__ import annotations

from collections.abc import Sequence

from callbridge.audio import ulaw as ulaw_codec
from callbridge.audio.frames import ULAW_FRAME_BYTES, Framer
from callbridge.audio.levels import rms_dbfs
from callbridge.engine.backchannel import BackchannelJudge
from callbridge.engine.config import TurnRules
from callbridge.engine.events import JudgeTurn
from callbridge.engine.speech import SpeechTracker
from callbridge.engine.turn_end import looks_finished
from callbridge.engine.words import CallerWords
from callbridge.providers.base import TranscriptUpdate, VadStream

__all__ = ["TurnDetector"]

_TURN_AUDIO_BYTES = 8 * 8000 * 2  # the end-of-turn model hears at most 8 s


class TurnDetector:
    def __init__(
        self,
        rules: TurnRules,
        *,
        vad: VadStream,
        vad_threshold: float,
        stt_enabled: bool,
        judge_turns: bool,
    ) -> None:
        self.rules = rules
        self.speech = SpeechTracker()
        self.words = CallerWords()
        self.stt = stt_enabled  # a transcriber streams this call's words
        self.backchannels = BackchannelJudge.for_language(rules.backchannels, rules.language)
        self._vad = vad
        self._threshold = vad_threshold
        self._framer = Framer(ULAW_FRAME_BYTES)  # a chunk's remainder waits for the next
        # An end-of-turn model hears each silence onset (the caller's latest 8 s of PCM).
        self.judge_turns = judge_turns and rules.end_of_turn == "smart-turn"
        self._turn_audio = bytearray()
        self._eot_asked_run = -1
        self._eot_verdict: tuple[int, bool] | None = None  # (run, the model heard it end)
        self._finalized_run = -1  # the run whose silence STT was already asked to finalise

    # ------------------------------------------------------------ audio

    def frames(self, ulaw: bytes) -> Sequence[bytes]:
        """Whole 20 ms frames of what arrived (Twilio sends whole ones; a test may not)."""
        if len(ulaw) == ULAW_FRAME_BYTES and not self._framer.pending:
            return (ulaw,)  # the usual case, without a copy
        return self._framer.push(ulaw)

    @property
    def vad(self) -> VadStream:
        return self._vad

    def hear_frame(self, frame: bytes, stamp_ms: int | None, now: float) -> None:
        pcm = ulaw_codec.decode(frame)
        self.hear_pcm(pcm, rms_dbfs(pcm), None, stamp_ms, now)

    def hear_pcm(
        self,
        pcm: bytes,
        level_dbfs: float,
        probability: float | None,
        stamp_ms: int | None,
        now: float,
    ) -> None:
        """One 20 ms frame's facts; ``probability`` None: ask this call's VAD now."""
        if probability is None:
            probability = self._vad.speech_probability(pcm)
        if self.judge_turns:
            audio = self._turn_audio
            audio += pcm
            if len(audio) > 2 * _TURN_AUDIO_BYTES:
                del audio[: len(audio) - _TURN_AUDIO_BYTES]
        self.hear_scored(level_dbfs, probability, stamp_ms, now)

    def hear_scored(
        self, level_dbfs: float, probability: float, stamp_ms: int | None, now: float
    ) -> None:
        """A scored frame's facts when nothing here needs its PCM (no end-of-turn model):
        the metronome's usual frame, without a copy of its audio."""
        speech = self.speech
        speech.update(probability >= self._threshold, level_dbfs, 20, now, stamp_ms)
        if speech.run_ms == 0:
            self.words.in_run = None

    def hear_words(self, update: TranscriptUpdate) -> bool:
        """A transcript for the current speech run; True when it added words."""
        speech = self.speech
        return self.words.hear(update, speech.run_id, speech.run_ms > 0)

    # ------------------------------------------------------------ facts

    def endpoint_silence_ms(self, held_text: str | None) -> int:
        """The silence that ends this turn: shorter when its words sound finished
        (``held_text``: the words a held answer was started from)."""
        rules, words = self.rules, self.words
        if not self.stt or rules.end_of_turn == "off" or words.unfinished():
            return rules.endpointing_ms
        if self.judge_turns and self._eot_asked_run == self.speech.run_id:
            verdict = self._eot_verdict
            if verdict is None or verdict[0] != self.speech.run_id or not verdict[1]:
                # The model hears a sentence that goes on, or has not answered yet: the
                # short endpoint needs its agreement.
                return rules.endpointing_ms
        if looks_finished(held_text if held_text is not None else words.text()):
            return min(rules.quick_endpointing_ms, rules.endpointing_ms)
        return rules.endpointing_ms

    def waits_for_words(self) -> bool:
        """``interruptMinWords`` against the live transcript of this speech run.

        One word (the default) keeps barge-in as fast as the VAD: it waits only once the
        transcriber has reported this speech without words (an empty interim). Two or
        more is a deliberate trade of speed for ignoring "mm-hm": with a transcriber that
        streams interims it waits for the words even before the first interim of this
        speech, bounded by ``interruptMaxLagMs``. A finals-only transcriber gives no
        words while the caller talks, so there barge-in stays the VAD's.
        """
        needed = self.rules.interrupt_min_words
        words = self.words.in_run
        if words is None:
            return (needed >= 2 and self.words.interims_seen) or self.may_be_backchannel()
        return words < needed or self.may_be_backchannel()

    def may_be_backchannel(self) -> bool:
        """Speech over the bot that is, so far, only "uh-huh" (or no words yet, with a
        transcriber that streams interims: they decide). The first word that is not a
        backchannel barges in at once; so does a run longer than ``backchannelMaxMs``."""
        limit = self.rules.backchannel_max_ms
        if not limit or not self.backchannels.enabled or not self.words.interims_seen:
            return False
        if self.speech.run_ms >= limit:
            return False
        if not self.words.in_run:
            return True
        return self.backchannels.judge(self.words.run_text)

    def is_backchannel(self, text: str) -> bool:
        return bool(self.rules.backchannel_max_ms) and self.backchannels.judge(text)

    # ------------------------------------------------------------ questions, once per silence

    def judge_request(self) -> JudgeTurn | None:
        """The model hears the turn's last 8 s, once per silence onset, off this path."""
        if not self.judge_turns or self._eot_asked_run == self.speech.run_id:
            return None
        self._eot_asked_run = self.speech.run_id
        return JudgeTurn(self.speech.run_id, bytes(self._turn_audio[-_TURN_AUDIO_BYTES:]))

    def on_verdict(self, run_id: int, finished_probability: float) -> None:
        if run_id == self.speech.run_id:  # still the silence it was asked about
            self._eot_verdict = (run_id, finished_probability >= 0.5)

    def finalize_due(self) -> bool:
        """Ask STT for its final words now? Once per silence."""
        if self._finalized_run == self.speech.run_id:
            return False
        self._finalized_run = self.speech.run_id
        return True

    def early_finalize_due(self) -> bool:
        """The first silence the VAD is sure of: ask for the final words now, so they are
        in hand by the endpoint instead of a round trip after it."""
        return (
            self.stt
            and bool(self.rules.speculate_ms)
            and self.speech.silence_ms >= self.rules.speculate_ms
            and self.words.owed()
            and self.finalize_due()
        )
