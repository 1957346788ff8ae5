"""One call's transcriber, kept alive across its vendor's faults (DESIGN.md §9 "Faults").

How it works: ``run`` opens the vendor's stream with the retry policy (1, 2, 4 s) and
forwards its events to the call's inbox. The caller's μ-law since the vendor's last
final transcript is kept in a bounded ring. A final that answers a ``finalize`` covers
the audio sent before that ``finalize`` only: the engine asks at the first sure pause,
and words the caller goes on with meanwhile stay in the ring until a final covers them.
When the stream dies mid-call (a close code, a timeout, garbage the client gave up on,
or no final transcript ``final_timeout_s`` after a ``finalize``: a stalled vendor), the
link posts ``SttDown`` and reconnects;
on success it re-sends the ring first, and a ``finalize`` asked for while it was down,
so the words spoken across the drop are still transcribed, then posts ``SttUp``. When
the policy is spent (or the error cannot be fixed by retrying) it posts ``SttFailed``
and stops: the engine apologises and hangs up. Nothing raised by the vendor's client
leaves ``run``, so no STT fault can end the call's task group with an exception.

``push_audio`` and ``finalize`` never block, as the ``SpeechToTextStream`` contract asks.

The cadence follows the caller: given the call's ``SpeechTracker``, each frame pushed
(after the engine heard it, so the tracker includes it) checks the trailing silence,
and a stream that can batch (``QuietAwareStream``) is told when the caller has been
quiet ``quiet_after_ms`` and when they speak again. 300 ms: past the VAD's gap
tolerance and the early ``Finalize`` (``speculateMs``, 200 ms), about Deepgram's own
endpointing (300 ms), so the audio around the end of a turn goes at the speech cadence;
longer quiet (the bot's turn, pauses, the greeting) is most of a call. Speech flushes
what is held before the frame's push returns, so onset and barge-in wait for nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from callbridge.engine.events import EngineEvent, SttDown, SttFailed, SttUp
from callbridge.errors import ProviderError
from callbridge.providers.base import (
    QuietAwareStream,
    SpeechToText,
    SpeechToTextStream,
    TranscriptUpdate,
)
from callbridge.providers.retry import DEFAULT_DELAYS_S, OnRetry, Sleep, retry_call

if TYPE_CHECKING:
    from callbridge.engine.speech import SpeechTracker

__all__ = ["DEFAULT_FINAL_TIMEOUT_S", "DEFAULT_QUIET_AFTER_MS", "DEFAULT_RESEND_S", "SttLink"]

log = logging.getLogger(__name__)

DEFAULT_RESEND_S = 5.0
"""Caller audio kept since the last final, to re-send after a reconnect."""
DEFAULT_FINAL_TIMEOUT_S = 3.0
"""A vendor that owes a final this long after ``finalize`` is stalled: reconnect."""
DEFAULT_QUIET_AFTER_MS = 300
"""Trailing silence after which the caller counts as quiet (see the module's docstring)."""
_FRAME_S = 0.02
_CLOSE_WAIT_S = 2.0


class SttLink:
    def __init__(
        self,
        stt: SpeechToText,
        post: Callable[[EngineEvent], None],
        *,
        delays_s: Sequence[float] = DEFAULT_DELAYS_S,
        sleep: Sleep = asyncio.sleep,
        resend_s: float = DEFAULT_RESEND_S,
        final_timeout_s: float = DEFAULT_FINAL_TIMEOUT_S,
        on_retry: OnRetry | None = None,
        speech: SpeechTracker | None = None,
        quiet_after_ms: int = DEFAULT_QUIET_AFTER_MS,
    ) -> None:
        """``on_retry`` is told of each retried open (the call's record keeps them);
        ``speech``: the call's tracker, whose silence sets the cadence (None: never quiet)."""
        self._stt = stt
        self._on_retry = on_retry
        self._post = post
        self._delays = tuple(delays_s)
        self._sleep = sleep
        self._ring: deque[bytes] = deque(maxlen=max(1, round(resend_s / _FRAME_S)))
        self._pushed = 0  # frames pushed this call; the ring holds the newest of them
        self._marks: deque[int] = deque()  # ``_pushed`` at each finalize sent, unanswered
        self._stream: SpeechToTextStream | None = None
        self._finalize_owed = False
        self._final_timeout_s = final_timeout_s
        self._final_due: float | None = None  # loop time by which the owed final must come
        self._wait: asyncio.Timeout | None = None  # the pump's wait for the next event
        self._closing = False
        self._down = False  # SttDown was posted and SttUp not yet
        self._closers: set[asyncio.Task[None]] = set()
        self.provider = getattr(stt, "name", "stt")
        self.reconnects = 0
        self._speech = speech
        self._quiet_after_ms = quiet_after_ms
        self.quiet = False  # the caller's side as last told to the stream
        self._tell_quiet: Callable[[bool], None] | None = None  # the stream's, if it batches

    # ------------------------------------------------------------ the call's side

    def push_audio(self, ulaw: bytes) -> None:
        """One frame the engine has heard; the frame goes first, so speech sends it
        with what was held."""
        self._ring.append(ulaw)
        self._pushed += 1
        if self._stream is not None:
            self._stream.push_audio(ulaw)
        speech = self._speech
        if speech is not None and (speech.silence_ms >= self._quiet_after_ms) is not self.quiet:
            self.quiet = not self.quiet
            if self._tell_quiet is not None:
                self._tell_quiet(self.quiet)

    def finalize(self) -> None:
        self._finalize_owed = True
        if self._stream is not None:
            self._stream.finalize()
            self._marks.append(self._pushed)
            self._expect_final()

    def _expect_final(self) -> None:
        if self._final_due is None:
            self._final_due = asyncio.get_running_loop().time() + self._final_timeout_s
        if self._wait is not None:
            self._wait.reschedule(self._final_due)

    @property
    def closing(self) -> bool:
        return self._closing

    async def aclose(self) -> None:
        self._closing = True
        stream, self._stream = self._stream, None
        self._tell_quiet = None
        if stream is not None:
            self._discard(stream)
        if self._closers:
            await asyncio.wait(self._closers)

    def _discard(self, stream: SpeechToTextStream) -> None:
        """Close a dead stream beside the reconnect: a stalled vendor may take seconds
        to let go, and the caller is talking meanwhile."""
        closer = asyncio.create_task(_close_quietly(stream))
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)

    # ------------------------------------------------------------ the vendor's side

    async def run(self) -> None:
        """Serve transcripts until closed or given up; never raises (but cancels)."""
        drops = 0  # consecutive failures with no words in between
        while not self._closing:
            try:
                stream = await retry_call(
                    functools.partial(self._stt.open_stream, on_retry=self._on_retry),
                    delays_s=self._delays,
                    sleep=self._sleep,
                    on_retry=self._open_failed,
                )
            except Exception as exc:  # every failure is reported to the call
                self._give_up(exc)
                return
            if self.closing:
                await _close_quietly(stream)
                return
            resent = len(self._ring)
            for frame in self._ring:
                stream.push_audio(frame)
            self._stream = stream
            # The re-sent audio went at the usual cadence; the caller's state from now.
            self._tell_quiet = stream.caller_quiet if isinstance(stream, QuietAwareStream) else None
            if self.quiet and self._tell_quiet is not None:
                self._tell_quiet(True)
            self._final_due = None
            self._marks.clear()  # finalizes sent to the old stream die with it
            if self._finalize_owed:
                stream.finalize()
                self._marks.append(self._pushed)
                self._expect_final()
            if self._down:
                self._down = False
                self.reconnects += 1
                self._post(SttUp(self.provider, resent_ms=round(resent * _FRAME_S * 1000)))
            error = await self._pump(stream)
            if self._stream is stream:
                self._stream = None
                self._tell_quiet = None
            self._discard(stream)
            if self.closing or error is None:
                return
            fault, heard_words = error
            if heard_words:
                drops = 0  # it worked for a while: a fresh budget for this drop
            drops += 1
            fatal = isinstance(fault, ProviderError) and not fault.retryable
            if fatal or drops > len(self._delays):
                self._give_up(fault)
                return
            log.warning("stt.lost provider=%s error=%s drops=%d", self.provider, fault, drops)
            self._went_down(fault)
            if drops > 1:
                await self._sleep(self._delays[drops - 2])

    async def _pump(self, stream: SpeechToTextStream) -> tuple[BaseException, bool] | None:
        """Forward events; None when the stream ended because we closed it, else the
        error and whether words came through before it."""
        words = False
        events = stream.events()
        try:
            while True:
                async with asyncio.timeout_at(self._final_due) as wait:
                    self._wait = wait
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        break
                    finally:
                        self._wait = None
                if isinstance(event, TranscriptUpdate):
                    if event.is_final:
                        self._finalised(event.from_finalize)
                    words = words or bool(event.text)
                self._post(event)
        except TimeoutError:
            stalled = f"no final transcript {self._final_timeout_s:g} s after Finalize"
            return ProviderError(self.provider, stalled, retryable=True), words
        except Exception as exc:  # a vendor fault, reported by run()
            return exc, words
        if self._closing:
            return None
        return ProviderError(self.provider, "the stream ended mid-call", retryable=True), words

    def _finalised(self, from_finalize: bool) -> None:
        """The vendor is done with some audio: forget it. A ``finalize``'s answer covers
        the frames before that ``finalize``; its own endpoint, all of them."""
        if from_finalize and self._marks:
            covered = self._marks.popleft() - (self._pushed - len(self._ring))
            for _ in range(max(0, min(covered, len(self._ring)))):
                self._ring.popleft()
        else:
            self._ring.clear()
            self._marks.clear()
        self._finalize_owed = bool(self._marks)
        self._final_due = None
        if self._marks:
            self._expect_final()  # a later finalize still owes its final

    def _open_failed(self, exc: ProviderError, retry: int, delay_s: float) -> None:
        """Not connected yet (at the start of the call too): the engine must not wait
        on words that cannot come, nor answer turns without them."""
        if self._on_retry is not None:
            self._on_retry(exc, retry, delay_s)
        self._went_down(exc)

    def _went_down(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            self._post(SttDown(self.provider, _describe(exc)))

    def _give_up(self, exc: BaseException) -> None:
        if not isinstance(exc, ProviderError):
            log.error("stt.crashed provider=%s", self.provider, exc_info=exc)
        self._post(SttFailed(self.provider, _describe(exc)))


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ProviderError) else repr(exc)


async def _close_quietly(stream: SpeechToTextStream) -> None:
    """Close a vendor stream; a close that fails or hangs must not take the call down."""
    try:
        async with asyncio.timeout(_CLOSE_WAIT_S):
            await stream.aclose()
    except Exception as exc:  # the stream is being thrown away
        log.info("stt.close_failed error=%r", exc)
