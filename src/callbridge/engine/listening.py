"""The rules of the caller's turn: when it starts, when it ends, and what speech over
the bot does.

A turn starts after ``startMs`` of speech and ends after ``endpointingMs`` of silence
and the transcriber's final words (or its timeout). After ``speculateMs`` of silence the
transcriber is asked for its final words at once (``Finalize``) instead of at the
endpoint, and the answer is started early and held, from the words in hand, interim ones
included: a final with the same words keeps it, other words restart it. The endpoint
releases it at once, and if the caller goes on it is dropped unheard. Speech while the
bot talks is judged for barge-in (``consider_barge_in``) and silences it through
``Speaker.barge_in``.

``Listening`` is a part of ``CallEngine`` (``core.py``): it reads the caller's facts
from the ``TurnDetector`` and owns only the state of the turn in progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callbridge.engine.events import (
    SPEAKING_PHASES,
    FinalizeStt,
    Phase,
    ReplyKind,
    TurnRecord,
    WarmUp,
)
from callbridge.engine.replies import Reply, ReplyStage
from callbridge.engine.transport import Heard
from callbridge.engine.words import same_words, starts_with_words
from callbridge.providers.base import Message, TranscriptUpdate

if TYPE_CHECKING:
    from callbridge.engine.core import CallEngine

__all__ = ["Listening"]

# Per-frame rules read module globals: ``Phase.X`` costs ~0.15 µs on CPython 3.11.
_LISTENING, _USER_SPEAKING, _THINKING = Phase.LISTENING, Phase.USER_SPEAKING, Phase.THINKING
_GREETING, _BOT_SPEAKING = Phase.GREETING, Phase.BOT_SPEAKING


class Listening:
    def __init__(self, engine: CallEngine) -> None:
        self.e = engine
        self.idle_at: float | None = None  # reprompt the caller at this time
        self.reprompts = 0
        self.user_started_at = 0.0
        self.endpoint_at: float | None = None  # enough silence was heard at this time
        self.await_final_until: float | None = None  # STT owes the turn's words until
        self.judged_run = 0  # speech run already judged for barge-in (stale or taken)
        self.guess: str | None = None  # interim words a held reply answers, until a final
        self.guess_base = ""  # the final words that came before that guess
        self.finalized_at: float | None = None  # Finalize sent in this turn (a hop mark)

    # ------------------------------------------------------------ caller audio and turns

    def on_audio(self, data: bytes, stamp: int | None, now: float) -> None:
        """A caller chunk fed by hand: each frame's facts computed here."""
        turn = self.e.turn
        for index, frame in enumerate(turn.frames(data)):
            turn.hear_frame(frame, None if stamp is None else stamp + index * 20, now)
            self._after_frame(now)

    def on_heard(self, heard: Heard, now: float) -> None:
        """A tick's frames with their facts already computed (the metronome's pass)."""
        turn, pcm, levels, scores = self.e.turn, heard.pcm, heard.levels, heard.probabilities
        if scores is not None and not turn.judge_turns:  # no frame's PCM is needed
            for index, stamp in enumerate(heard.stamps):
                turn.hear_scored(levels[index], scores[index], stamp, now)
                self._after_frame(now)
            return
        for index, stamp in enumerate(heard.stamps):
            turn.hear_pcm(
                pcm[index * 320 : index * 320 + 320],
                levels[index],
                None if scores is None else scores[index],
                stamp,
                now,
            )
            self._after_frame(now)

    def _after_frame(self, now: float) -> None:
        e = self.e
        speech, rules = e.turn.speech, e.turns
        run, phase = speech.run_ms, e.phase
        if phase is _LISTENING:
            if run >= rules.start_ms:
                self.begin_user_turn(now)
        elif phase is _USER_SPEAKING:
            if run > 0 and self.endpoint_at is not None:
                self.endpoint_at = None  # the caller resumed: wait for a new endpoint
                self.await_final_until = None
            reply = e.speaker.replies.current  # (``Speaker.held``, inline: every frame)
            if run >= rules.start_ms and reply is not None and reply.held:
                self.drop_speculation()  # the caller went on: the early reply is unheard
            elif run == 0 and self.endpoint_at is None:
                judge = e.turn.judge_request()
                if judge is not None:
                    e.send(judge)
                if speech.silence_ms >= e.turn.endpoint_silence_ms(self._held_text()):
                    self._endpoint(now)
                else:
                    if e.turn.early_finalize_due():
                        e.send(FinalizeStt())
                        self.finalized_at = now
                    self._maybe_speculate(now)
        elif phase is _THINKING:
            if run >= rules.start_ms:
                self.caller_went_on(now)
        elif (phase is _BOT_SPEAKING or phase is _GREETING) and run >= rules.interrupt_min_ms:
            self.consider_barge_in(now)  # (the SPEAKING_PHASES)

    def _held_text(self) -> str | None:
        if self.e.speaker.held() is None:
            return None
        return self.e.conversation.messages()[-1].content

    def begin_user_turn(self, now: float) -> None:
        e = self.e
        if e.phase is not Phase.USER_SPEAKING:
            e.send(WarmUp())
        e.enter(Phase.USER_SPEAKING)
        self.user_started_at = e.turn.speech.onset_at or now
        self.finalized_at = None
        self.idle_at = None
        self.reprompts = 0
        self.endpoint_at = None
        self.await_final_until = None

    def stop_waiting(self) -> None:
        """The call is ending: no reprompt, no wait for words."""
        self.idle_at = None
        self.await_final_until = None

    def listen(self, now: float) -> None:
        e = self.e
        if e.announcements and e.turn.speech.run_ms < e.turns.start_ms:
            self.idle_at = None
            e.speaker.replies.start(now, ReplyKind.ANNOUNCEMENT, text=e.announcements.pop(0))
            e.enter(Phase.THINKING)
            return
        e.enter(Phase.LISTENING)
        self.idle_at = now + e.turns.idle_timeout_s
        if e.turn.speech.run_ms >= e.turns.start_ms:
            self.begin_user_turn(now)  # the caller was already talking as we finished

    def _endpoint(self, now: float) -> None:
        """Enough silence: the caller is done, unless STT still owes us their words."""
        e = self.e
        self.endpoint_at = now
        e.faults.arm_hold(now)
        if not e.turn.stt:
            self.finish_user_turn(now)
            return
        if e.turn.finalize_due():
            e.send(FinalizeStt())
            self.finalized_at = now
        # A held answer already has the turn's words (once a final confirmed any guessed
        # ones); only newer, unfinished ones count.
        words = e.turn.words
        if e.speaker.held() is not None:
            owed = words.unfinished() or self.guess is not None
        else:
            owed = words.owed()
        if owed and e.faults.stt_down:
            pass  # its words come after the reconnect (SttUp starts the STT timeout)
        elif owed:
            self.await_final_until = now + e.turns.stt_timeout_ms / 1000
        else:
            self.finish_user_turn(now)

    # ------------------------------------------------------------ barge-in

    def consider_barge_in(self, now: float) -> None:
        e = self.e
        speech = e.turn.speech
        if self.judged_run == speech.run_id:
            return
        if e.turn.stt and not e.faults.stt_down and e.turn.waits_for_words():
            return  # the transcriber has not heard enough words of this speech yet
        # (While STT is down, barge-in runs on the VAD alone: no words are coming.)
        self.judged_run = speech.run_id
        onset = speech.onset_at if speech.onset_at is not None else now
        if (now - onset) * 1000 > e.turns.interrupt_max_lag_ms:
            e.stale_interrupts += 1
            e.note("barge_in_stale", lag_ms=round((now - onset) * 1000))
            return
        self.barge_in(now, reason="speech")

    def barge_in(self, now: float, *, reason: str) -> None:
        """The caller takes the turn: silence the bot, keep what was heard."""
        e = self.e
        cut, reply = e.speaker.barge_in(now)
        e.conversation.add_assistant(cut.heard)
        e.barge_ins += 1
        if reason == "speech":
            e.resumption.arm(now, cut.spoken, cut.heard)  # in case no words follow
        e.record(
            reply.record(cut.spoken, cut.heard, now, interrupted=True)
            if reply
            else TurnRecord("assistant", cut.spoken, cut.heard, interrupted=True, ended_at=now)
        )
        onset = e.turn.speech.onset_at
        e.note(
            "barge_in",
            reason=reason,
            heard_words=len(cut.heard.split()),
            reaction_ms=round((now - onset) * 1000) if reason == "speech" and onset else 0,
        )
        self.begin_user_turn(now)

    # ------------------------------------------------------------ words

    def on_transcript(self, update: TranscriptUpdate, now: float) -> None:
        e = self.e
        turn, phase = e.turn, e.phase
        added = turn.hear_words(update)
        over_bot = phase in SPEAKING_PHASES
        reply = e.speaker.reply
        resuming = reply is not None and reply.kind is ReplyKind.RESUMPTION
        if (
            added
            # LISTENING: an "uh-huh" said as the bot ended; resuming: its final came late
            and (over_bot or phase is Phase.LISTENING or resuming)
            and turn.is_backchannel(update.text)
        ):
            turn.words.drop_last()  # kept on record, not answered
            e.resumption.record_backchannel(update.text.strip(), now)
            return
        if over_bot:
            if turn.speech.run_ms >= e.turns.interrupt_min_ms:
                self.consider_barge_in(now)  # these words may be what it waited for
            return
        if e.resumption.pending is not None and phase is Phase.USER_SPEAKING:
            words = e.resumption.new_words()
            if words and not turn.backchannels.judge(words):
                e.resumption.cancel("caller_spoke")
        if not added:
            return
        held = e.speaker.held()
        if phase is Phase.USER_SPEAKING and held is not None:
            guess = self.guess
            if guess is not None and same_words(turn.words.text(), guess):
                self._confirm_guess(now)
                return
            flush_ended = update.from_finalize or update.speech_final
            if guess is not None and not flush_ended and starts_with_words(
                guess, turn.words.text()
            ):
                return  # the first span of a final that comes in pieces: wait for the rest
            self.drop_speculation()  # other or more words: answer them all
        waiting = self.await_final_until is not None or (
            self.endpoint_at is not None and turn.stt  # a final after a reconnect
        )
        if phase is Phase.USER_SPEAKING and waiting:
            if turn.speech.silence_ms < turn.endpoint_silence_ms(self._held_text()):
                # A guess that read finished took the quick endpoint; its final ends on a
                # word that promises more ("… check the"): wait the full silence after all.
                self.endpoint_at = self.await_final_until = None
            else:
                self.finish_user_turn(now)
                if e.speaker.reply is not None:
                    e.speaker.reply.marks["final_words"] = now
        elif phase is Phase.USER_SPEAKING:
            self._maybe_speculate(now)
        elif phase is Phase.THINKING and e.speaker.reply is not None:
            # Words that arrived after we answered: answer the whole thing instead.
            self.caller_went_on(now)
            self.finish_user_turn(now)

    def on_dtmf(self, digit: str, now: float) -> None:
        e = self.e
        if e.phase in SPEAKING_PHASES:
            self.barge_in(now, reason="dtmf")
        elif e.phase is Phase.THINKING:
            e.speaker.replies.cancel()  # nothing of it was heard yet
        elif e.speaker.held() is not None:
            self.drop_speculation()
        self.finish_user_turn(now, dtmf=digit)

    def finish_user_turn(self, now: float, dtmf: str | None = None) -> None:
        e = self.e
        self.idle_at = None
        if dtmf is not None:
            e.faults.arm_hold(now)
        held = e.speaker.held()
        if held is not None and dtmf is None:
            self._commit_speculation(held, now)
            return
        if dtmf is not None:
            e.resumption.cancel("dtmf")
        elif e.resumption.resumes_instead(e.resumption.new_words(), now):
            return
        text = e.turn.words.take()
        content = text if dtmf is None else (f"{text} (pressed {dtmf})".strip())
        e.conversation.add_user(Message("user", content, dtmf=dtmf))
        started = self.user_started_at or now
        e.record(TurnRecord(role="user", text=content, started_at=started, ended_at=now))
        self.await_final_until = None
        endpoint_at = self.endpoint_at if self.endpoint_at is not None else now
        self.endpoint_at = None
        reply = e.speaker.replies.start(
            now, ReplyKind.ANSWER, messages=e.conversation.messages()
        )
        reply.latency_ms["stt"] = (now - endpoint_at) * 1000
        reply.started_at = endpoint_at
        if dtmf is None:
            self._mark_start(reply, now)
            reply.marks["endpoint"] = endpoint_at
        e.enter(Phase.THINKING)

    def caller_went_on(self, now: float) -> None:
        """The caller kept talking before hearing our answer: drop it, unheard."""
        e = self.e
        reply = e.speaker.reply
        answering = reply is not None and reply.kind is ReplyKind.ANSWER
        if reply is not None and reply.kind is ReplyKind.RESUMPTION:
            e.note("resume_cancelled", reason="caller_spoke")
        e.speaker.replies.cancel()
        if answering:
            withdrawn = e.conversation.take_last_user()
            if withdrawn is not None and withdrawn.dtmf is None and withdrawn.content:
                e.turn.words.prepend(withdrawn.content)
        self.begin_user_turn(now)

    # ------------------------------------------------------------ timers

    def final_timeout(self, now: float) -> None:
        """STT owed the turn's words and did not bring them in time: answer without."""
        if self.e.faults.stt_down:
            self.await_final_until = None  # the words come with the reconnect
            return
        self.e.note("stt_timeout")
        self.finish_user_turn(now)

    def check_idle(self, now: float) -> None:
        e = self.e
        if e.phase is not Phase.LISTENING or self.idle_at is None or now < self.idle_at:
            return
        self.idle_at = None
        if self.reprompts < e.turns.idle_max_reprompts:
            self.reprompts += 1
            e.speaker.replies.start(now, ReplyKind.REPROMPT, text=e.script.idle_message)
            e.enter(Phase.THINKING)
        else:
            e.ending.end_call(now, ReplyKind.GOODBYE, e.script.end_call_message)

    # ------------------------------------------------------------ speculative replies

    def _maybe_speculate(self, now: float) -> None:
        """Quiet long enough, words in hand: start the answer now, play it at the endpoint.

        Words STT has not finalised yet count: the final is ~100 ms away and nearly always
        says the same, and the model's first token is the longest wait of the turn."""
        e = self.e
        turn, rules = e.turn, e.turns
        if (
            rules.speculate_ms == 0
            or turn.speech.silence_ms < rules.speculate_ms
            or e.speaker.reply is not None
            or e.resumption.pending is not None  # it may be a false interruption
        ):
            return
        self.guess = None
        if turn.stt and turn.words.owed():
            guess = turn.words.interim
            if not guess:
                return  # nothing heard yet
            self.guess, self.guess_base = guess, turn.words.text()
            text = f"{self.guess_base} {guess}".strip()
            turn.words.take()
        else:
            text = turn.words.take()
        e.conversation.add_user(Message("user", text))
        reply = e.speaker.replies.start(
            now, ReplyKind.ANSWER, messages=e.conversation.messages()
        )
        reply.held = True
        self._mark_start(reply, now)

    def _mark_start(self, reply: Reply, now: float) -> None:
        """The turn's hops so far, on the answer's record: the caller's speech end as the
        VAD dated it, when the VAD said so, the Finalize, and the answer asked for now."""
        speech, marks = self.e.turn.speech, reply.marks
        if speech.silence_at is not None and speech.silence_seen_at is not None:
            marks["speech_end"] = speech.silence_at
            marks["vad_silence"] = speech.silence_seen_at
        if self.finalized_at is not None:
            marks["finalize"] = self.finalized_at
        marks["reply_start"] = now

    def _confirm_guess(self, now: float) -> None:
        """The final says what the held reply guessed: keep the reply, record the final."""
        e = self.e
        final = e.turn.words.take()
        self.guess = None
        held = e.speaker.held()
        if held is not None:
            held.marks["final_words"] = now
        e.conversation.take_last_user()
        e.conversation.add_user(Message("user", f"{self.guess_base} {final}".strip()))
        if self.await_final_until is not None:
            self.finish_user_turn(now)  # the endpoint was only waiting for these words

    def drop_speculation(self) -> None:
        e = self.e
        e.speaker.drop_held()
        withdrawn = e.conversation.take_last_user()
        if self.guess is not None:
            # Guessed words are STT's to give: its final brings them (or others).
            restore, self.guess = self.guess_base, None
        else:
            restore = withdrawn.content if withdrawn is not None else ""
        if restore:
            e.turn.words.prepend(restore)

    def _commit_speculation(self, reply: Reply, now: float) -> None:
        """The endpoint confirms the turn the held reply answers: let it play."""
        e = self.e
        self.guess = None  # unconfirmed only if STT timed out: the guess stands
        user = e.conversation.messages()[-1]
        started = self.user_started_at or now
        e.record(TurnRecord(role="user", text=user.content, started_at=started, ended_at=now))
        self.await_final_until = None
        reply.marks["endpoint"] = self.endpoint_at if self.endpoint_at is not None else now
        reply.marks["released"] = now
        self.endpoint_at = None
        reply.held = False
        reply.latency_ms["speculated_ms"] = (now - reply.started_at) * 1000
        reply.latency_ms["stt"] = 0.0
        reply.started_at = now
        if reply.first_segment_at is not None:
            reply.latency_ms["first_sentence"] = max(0.0, reply.first_segment_at - now) * 1000
        if reply.first_audio_at is not None:
            reply.latency_ms["first_audio"] = max(0.0, reply.first_audio_at - now) * 1000
        e.enter(Phase.THINKING if reply.stage is ReplyStage.WAITING else Phase.BOT_SPEAKING)
