"""The caller's side of a call: audio frames become speech runs, runs become turns.

A turn starts after ``startMs`` of speech and ends after ``endpointingMs`` of silence
and the transcriber's final words (or its timeout). After ``speculateMs`` of silence the
transcriber is asked for its final words at once (``Finalize``) instead of at the
endpoint, and the answer is started early and held, from the words in hand, interim ones
included: a final with the same words keeps it, other words restart it. The endpoint
releases it at once, and if the caller goes on it is dropped unheard. Speech while the
bot talks is judged for barge-in by ``CallEngine``.

``Listening`` is a part of ``CallEngine`` (a mixin): it shares the engine's state, which
is declared here for the type checker, and calls back into the engine's barge-in.
"""

from __future__ import annotations

from callbridge.assistant import TurnTaking
from callbridge.audio import ulaw as ulaw_codec
from callbridge.audio.frames import ULAW_FRAME_BYTES
from callbridge.audio.levels import rms_dbfs
from callbridge.engine.backchannel import BackchannelJudge
from callbridge.engine.conversation import Conversation
from callbridge.engine.events import (
    SPEAKING_PHASES,
    CallEventKind,
    Command,
    FinalizeStt,
    JudgeTurn,
    Phase,
    ReplyKind,
    TurnRecord,
    WarmUp,
)
from callbridge.engine.playout import Playout
from callbridge.engine.replies import Replies, Reply
from callbridge.engine.resumption import Pending
from callbridge.engine.speech import SpeechTracker
from callbridge.engine.turn_end import looks_finished
from callbridge.engine.words import CallerWords, same_words, starts_with_words
from callbridge.providers.base import Message, TranscriptUpdate, VadStream

__all__ = ["Listening"]

_TURN_AUDIO_BYTES = 8 * 8000 * 2  # the end-of-turn model hears at most 8 s



class Listening:
    phase: Phase
    turns: TurnTaking
    speech: SpeechTracker
    conversation: Conversation
    playout: Playout
    _vad: VadStream
    _threshold: float
    _stt: bool
    _out: list[Command]
    _replies: Replies
    _idle_at: float | None
    _reprompts: int
    _user_started_at: float
    _words: CallerWords
    _endpoint_at: float | None
    _await_final_until: float | None
    _pending_ulaw: bytes
    _finalized_run: int  # the speech run whose silence STT was already asked to finalise
    _guess: str | None  # interim words a held reply answers, until a final confirms them
    _guess_base: str  # the final words that came before that guess
    _judge_turns: bool  # an end-of-turn model hears each silence onset
    _turn_audio: bytearray  # the caller's latest audio (8 kHz PCM), for that model
    _eot_asked_run: int
    _eot_verdict: tuple[int, bool] | None  # (speech run, the model heard it finished)
    stt_down: bool  # Faults': the transcriber is reconnecting

    def _arm_hold(self, now: float) -> None:
        raise NotImplementedError  # Faults'

    def _consider_barge_in(self, now: float) -> None:
        raise NotImplementedError  # CallEngine's

    def _barge_in(self, now: float, *, reason: str) -> None:
        raise NotImplementedError  # CallEngine's

    def _record(self, turn: TurnRecord) -> None:
        raise NotImplementedError  # CallEngine's

    # Resumption's (false interruptions, backchannels)
    _backchannels: BackchannelJudge
    _pending_resume: Pending | None

    def _resumes_instead(self, text: str, now: float) -> bool:
        raise NotImplementedError

    def _event(self, kind: CallEventKind, level: int = 20, **data: str | int | float) -> None:
        raise NotImplementedError  # CallEngine's

    def _new_words(self) -> str:
        raise NotImplementedError

    def _cancel_resumption(self, reason: str) -> None:
        raise NotImplementedError

    def _record_backchannel(self, text: str, now: float) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ caller audio and turns

    def _on_audio(self, data: bytes, stamp: int | None, now: float) -> None:
        data = self._pending_ulaw + data
        whole = len(data) - len(data) % ULAW_FRAME_BYTES
        self._pending_ulaw = data[whole:]
        for offset in range(0, whole, ULAW_FRAME_BYTES):
            frame = data[offset : offset + ULAW_FRAME_BYTES]
            pcm = ulaw_codec.decode(frame)
            probability = self._vad.speech_probability(pcm)
            frame_stamp = None if stamp is None else stamp + offset // 8
            level = rms_dbfs(pcm)
            if self._judge_turns:
                self._keep_turn_audio(pcm)
            self.speech.update(probability >= self._threshold, level, 20, now, frame_stamp)
            self._after_frame(now)

    def _after_frame(self, now: float) -> None:
        run, phase = self.speech.run_ms, self.phase
        if run == 0:
            self._words.in_run = None
        if phase is Phase.LISTENING and run >= self.turns.start_ms:
            self._begin_user_turn(now)
        elif phase is Phase.USER_SPEAKING:
            if run > 0 and self._endpoint_at is not None:
                self._endpoint_at = None  # the caller resumed: wait for a new endpoint
                self._await_final_until = None
            if run >= self.turns.start_ms and self._held() is not None:
                self._drop_speculation()  # the caller went on: the early reply is unheard
            elif run == 0 and self._endpoint_at is None:
                self._ask_judge()
                if self.speech.silence_ms >= self._endpoint_silence_ms():
                    self._endpoint(now)
                else:
                    self._finalize_early()
                    self._maybe_speculate(now)
        elif phase is Phase.THINKING and run >= self.turns.start_ms:
            self._caller_went_on(now)
        elif phase in SPEAKING_PHASES and run >= self.turns.interrupt_min_ms:
            self._consider_barge_in(now)

    def _begin_user_turn(self, now: float) -> None:
        if self.phase is not Phase.USER_SPEAKING:
            self._out.append(WarmUp())
        self.phase = Phase.USER_SPEAKING
        self._user_started_at = self.speech.onset_at or now
        self._idle_at = None
        self._reprompts = 0
        self._endpoint_at = None
        self._await_final_until = None

    def _endpoint_silence_ms(self) -> int:
        """The silence that ends this turn: shorter when its words sound finished."""
        turns = self.turns
        if not self._stt or turns.end_of_turn == "off" or self._words.unfinished():
            return turns.endpointing_ms
        if self._judge_turns and self._eot_asked_run == self.speech.run_id:
            verdict = self._eot_verdict
            if verdict is None or verdict[0] != self.speech.run_id or not verdict[1]:
                # The model hears a sentence that goes on, or has not answered yet: the
                # short endpoint needs its agreement.
                return turns.endpointing_ms
        held = self._held()
        text = self.conversation.messages()[-1].content if held else self._words.text()
        if looks_finished(text):
            return min(turns.quick_endpointing_ms, turns.endpointing_ms)
        return turns.endpointing_ms

    def _endpoint(self, now: float) -> None:
        """Enough silence: the caller is done, unless STT still owes us their words."""
        self._endpoint_at = now
        self._arm_hold(now)
        if not self._stt:
            self._finish_user_turn(now)
            return
        self._ask_for_final()
        # A held answer already has the turn's words (once a final confirmed any guessed
        # ones); only newer, unfinished ones count.
        if self._held() is not None:
            owed = self._words.unfinished() or self._guess is not None
        else:
            owed = self._words.owed()
        if owed and self.stt_down:
            pass  # its words come after the reconnect (SttUp starts the STT timeout)
        elif owed:
            self._await_final_until = now + self.turns.stt_timeout_ms / 1000
        else:
            self._finish_user_turn(now)

    # ------------------------------------------------------------ end-of-turn model

    def _keep_turn_audio(self, pcm: bytes) -> None:
        audio = self._turn_audio
        audio += pcm
        if len(audio) > 2 * _TURN_AUDIO_BYTES:
            del audio[: len(audio) - _TURN_AUDIO_BYTES]

    def _ask_judge(self) -> None:
        """Once per silence onset: the model hears the turn's last 8 s, off this path."""
        if self._judge_turns and self._eot_asked_run != self.speech.run_id:
            self._eot_asked_run = self.speech.run_id
            audio = bytes(self._turn_audio[-_TURN_AUDIO_BYTES:])
            self._out.append(JudgeTurn(self.speech.run_id, audio))

    def _on_turn_judged(self, run_id: int, finished_probability: float) -> None:
        if run_id == self.speech.run_id:  # still the silence it was asked about
            self._eot_verdict = (run_id, finished_probability >= 0.5)

    def _finalize_early(self) -> None:
        """The first silence the VAD is sure of: ask STT for its final words now, so they
        are in hand by the endpoint instead of a round trip after it."""
        if (
            self._stt
            and self.turns.speculate_ms
            and self.speech.silence_ms >= self.turns.speculate_ms
            and self._words.owed()
        ):
            self._ask_for_final()

    def _ask_for_final(self) -> None:
        if self._finalized_run != self.speech.run_id:  # once per silence
            self._finalized_run = self.speech.run_id
            self._out.append(FinalizeStt())

    def _on_transcript(self, update: TranscriptUpdate, now: float) -> None:
        added = self._words.hear(update, self.speech.run_id, self.speech.run_ms > 0)
        over_bot = self.phase in SPEAKING_PHASES
        reply = self._replies.current
        resuming = reply is not None and reply.kind is ReplyKind.RESUMPTION
        if (
            added
            # LISTENING: an "uh-huh" said as the bot ended; resuming: its final came late
            and (over_bot or self.phase is Phase.LISTENING or resuming)
            and self.turns.backchannel_max_ms
            and self._backchannels.judge(update.text)
        ):
            self._words.drop_last()  # kept on record, not answered
            self._record_backchannel(update.text.strip(), now)
            return
        if over_bot:
            if self.speech.run_ms >= self.turns.interrupt_min_ms:
                self._consider_barge_in(now)  # these words may be what it waited for
            return
        if self._pending_resume is not None and self.phase is Phase.USER_SPEAKING:
            words = self._new_words()
            if words and not self._backchannels.judge(words):
                self._cancel_resumption("caller_spoke")
        if not added:
            return
        held = self._held()
        if self.phase is Phase.USER_SPEAKING and held is not None:
            guess = self._guess
            if guess is not None and same_words(self._words.text(), guess):
                self._confirm_guess(now)
                return
            flush_ended = update.from_finalize or update.speech_final
            if guess is not None and not flush_ended and starts_with_words(
                guess, self._words.text()
            ):
                return  # the first span of a final that comes in pieces: wait for the rest
            self._drop_speculation()  # other or more words: answer them all
        waiting = self._await_final_until is not None or (
            self._endpoint_at is not None and self._stt  # a final after a reconnect
        )
        if self.phase is Phase.USER_SPEAKING and waiting:
            if self.speech.silence_ms < self._endpoint_silence_ms():
                # A guess that read finished took the quick endpoint; its final ends on a
                # word that promises more ("… check the"): wait the full silence after all.
                self._endpoint_at = self._await_final_until = None
            else:
                self._finish_user_turn(now)
        elif self.phase is Phase.USER_SPEAKING:
            self._maybe_speculate(now)
        elif self.phase is Phase.THINKING and self._replies.current is not None:
            # Words that arrived after we answered: answer the whole thing instead.
            self._caller_went_on(now)
            self._finish_user_turn(now)

    def _on_dtmf(self, digit: str, now: float) -> None:
        if self.phase is Phase.ENDING:
            return
        if self.phase in SPEAKING_PHASES:
            self._barge_in(now, reason="dtmf")
        elif self.phase is Phase.THINKING:
            self._replies.cancel()
        elif self._held() is not None:
            self._drop_speculation()
        self._finish_user_turn(now, dtmf=digit)

    def _finish_user_turn(self, now: float, dtmf: str | None = None) -> None:
        self._idle_at = None
        if dtmf is not None:
            self._arm_hold(now)
        held = self._held()
        if held is not None and dtmf is None:
            self._commit_speculation(held, now)
            return
        if dtmf is not None:
            self._cancel_resumption("dtmf")
        elif self._resumes_instead(self._new_words(), now):
            return
        text = self._words.take()
        content = text if dtmf is None else (f"{text} (pressed {dtmf})".strip())
        self.conversation.add_user(Message("user", content, dtmf=dtmf))
        started = self._user_started_at or now
        self._record(TurnRecord(role="user", text=content, started_at=started, ended_at=now))
        self._await_final_until = None
        endpoint_at = self._endpoint_at if self._endpoint_at is not None else now
        self._endpoint_at = None
        reply = self._replies.start(now, ReplyKind.ANSWER, messages=self.conversation.messages())
        reply.latency_ms["stt"] = (now - endpoint_at) * 1000
        reply.started_at = endpoint_at
        self.phase = Phase.THINKING

    def _caller_went_on(self, now: float) -> None:
        """The caller kept talking before hearing our answer: drop it, unheard."""
        reply = self._replies.current
        answering = reply is not None and reply.kind is ReplyKind.ANSWER
        if reply is not None and reply.kind is ReplyKind.RESUMPTION:
            self._event("resume_cancelled", reason="caller_spoke")
        self._replies.cancel()
        if answering:
            withdrawn = self.conversation.take_last_user()
            if withdrawn is not None and withdrawn.dtmf is None and withdrawn.content:
                self._words.prepend(withdrawn.content)
        self._begin_user_turn(now)

    # ------------------------------------------------------------ speculative replies

    def _held(self) -> Reply | None:
        reply = self._replies.current
        return reply if reply is not None and reply.held else None

    def _maybe_speculate(self, now: float) -> None:
        """Quiet long enough, words in hand: start the answer now, play it at the endpoint.

        Words STT has not finalised yet count: the final is ~100 ms away and nearly always
        says the same, and the model's first token is the longest wait of the turn."""
        if (
            self.turns.speculate_ms == 0
            or self.speech.silence_ms < self.turns.speculate_ms
            or self._replies.current is not None
            or self._pending_resume is not None  # it may be a false interruption
        ):
            return
        self._guess = None
        if self._stt and self._words.owed():
            guess = self._words.interim
            if not guess:
                return  # nothing heard yet
            self._guess, self._guess_base = guess, self._words.text()
            text = f"{self._guess_base} {guess}".strip()
            self._words.take()
        else:
            text = self._words.take()
        self.conversation.add_user(Message("user", text))
        reply = self._replies.start(now, ReplyKind.ANSWER, messages=self.conversation.messages())
        reply.held = True

    def _confirm_guess(self, now: float) -> None:
        """The final says what the held reply guessed: keep the reply, record the final."""
        final = self._words.take()
        self._guess = None
        self.conversation.take_last_user()
        self.conversation.add_user(Message("user", f"{self._guess_base} {final}".strip()))
        if self._await_final_until is not None:
            self._finish_user_turn(now)  # the endpoint was only waiting for these words

    def _drop_speculation(self) -> None:
        self._replies.cancel()
        self.playout.clear(self.playout.play_end)  # nothing of it was sent
        withdrawn = self.conversation.take_last_user()
        if self._guess is not None:
            # Guessed words are STT's to give: its final brings them (or others).
            restore, self._guess = self._guess_base, None
        else:
            restore = withdrawn.content if withdrawn is not None else ""
        if restore:
            self._words.prepend(restore)

    def _commit_speculation(self, reply: Reply, now: float) -> None:
        """The endpoint confirms the turn the held reply answers: let it play."""
        self._guess = None  # unconfirmed only if STT timed out: the guess stands
        user = self.conversation.messages()[-1]
        started = self._user_started_at or now
        self._record(TurnRecord(role="user", text=user.content, started_at=started, ended_at=now))
        self._await_final_until = None
        self._endpoint_at = None
        reply.held = False
        reply.latency_ms["speculated_ms"] = (now - reply.started_at) * 1000
        reply.latency_ms["stt"] = 0.0
        reply.started_at = now
        if reply.first_segment_at is not None:
            reply.latency_ms["first_sentence"] = max(0.0, reply.first_segment_at - now) * 1000
        if reply.first_audio_at is not None:
            reply.latency_ms["first_audio"] = max(0.0, reply.first_audio_at - now) * 1000
        self.phase = Phase.BOT_SPEAKING if reply.first_audio_at is not None else Phase.THINKING
