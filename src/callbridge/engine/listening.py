"""The caller's side of a call: audio frames become speech runs, runs become turns.

A turn starts after ``startMs`` of speech and ends after ``endpointingMs`` of silence
and the transcriber's final words (or its timeout). After ``speculateMs`` of silence the
answer is started early and held: the endpoint releases it at once, and if the caller
goes on it is dropped unheard. Speech while the bot talks is judged for barge-in by
``CallEngine``.

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
    Phase,
    ReplyKind,
    TurnRecord,
)
from callbridge.engine.playout import Playout
from callbridge.engine.replies import Replies, Reply
from callbridge.engine.resumption import Pending
from callbridge.engine.speech import SpeechTracker
from callbridge.engine.turn_end import looks_finished
from callbridge.engine.words import CallerWords
from callbridge.providers.base import Message, TranscriptUpdate, VadStream

__all__ = ["Listening"]



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
                if self.speech.silence_ms >= self._endpoint_silence_ms():
                    self._endpoint(now)
                else:
                    self._maybe_speculate(now)
        elif phase is Phase.THINKING and run >= self.turns.start_ms:
            self._caller_went_on(now)
        elif phase in SPEAKING_PHASES and run >= self.turns.interrupt_min_ms:
            self._consider_barge_in(now)

    def _begin_user_turn(self, now: float) -> None:
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
        self._out.append(FinalizeStt())
        # A held answer already has the turn's words; only newer, unfinished ones count.
        owed = self._words.unfinished() if self._held() is not None else self._words.owed()
        if owed and self.stt_down:
            pass  # its words come after the reconnect (SttUp starts the STT timeout)
        elif owed:
            self._await_final_until = now + self.turns.stt_timeout_ms / 1000
        else:
            self._finish_user_turn(now)

    def _on_transcript(self, update: TranscriptUpdate, now: float) -> None:
        added = self._words.hear(update, self.speech.run_id, self.speech.run_ms > 0)
        over_bot = self.phase in SPEAKING_PHASES
        if (
            added
            and (over_bot or self.phase is Phase.LISTENING)  # (an "uh-huh" as the bot ended)
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
        if self.phase is Phase.USER_SPEAKING and self._held() is not None:
            self._drop_speculation()  # more words: answer them all
        waiting = self._await_final_until is not None or (
            self._endpoint_at is not None and self._stt  # a final after a reconnect
        )
        if self.phase is Phase.USER_SPEAKING and waiting:
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
        """Quiet long enough, words in hand: start the answer now, play it at the endpoint."""
        if (
            self.turns.speculate_ms == 0
            or self.speech.silence_ms < self.turns.speculate_ms
            or self._replies.current is not None
            or self._pending_resume is not None  # it may be a false interruption
            or (self._stt and self._words.owed())
        ):
            return
        text = self._words.take()
        self.conversation.add_user(Message("user", text))
        reply = self._replies.start(now, ReplyKind.ANSWER, messages=self.conversation.messages())
        reply.held = True

    def _drop_speculation(self) -> None:
        self._replies.cancel()
        self.playout.clear(self.playout.play_end)  # nothing of it was sent
        withdrawn = self.conversation.take_last_user()
        if withdrawn is not None and withdrawn.content:
            self._words.prepend(withdrawn.content)

    def _commit_speculation(self, reply: Reply, now: float) -> None:
        """The endpoint confirms the turn the held reply answers: let it play."""
        user = self.conversation.messages()[-1]
        started = self._user_started_at or now
        self._record(TurnRecord(role="user", text=user.content, started_at=started, ended_at=now))
        self._await_final_until = None
        self._endpoint_at = None
        reply.held = False
        reply.latency_ms["speculated_ms"] = (now - reply.started_at) * 1000
        reply.latency_ms["stt"] = 0.0
        reply.started_at = now
        if reply.first_audio_at is not None:
            reply.latency_ms["first_audio"] = max(0.0, reply.first_audio_at - now) * 1000
        self.phase = Phase.BOT_SPEAKING if reply.first_audio_at is not None else Phase.THINKING
