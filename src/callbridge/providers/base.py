"""The small contracts between the engine and every vendor (DESIGN.md §4).

Audio inside callbridge is 8 kHz mono. Providers that speak μ-law 8 kHz (Twilio's
format) take and give μ-law bytes directly; VAD takes 16-bit little-endian PCM.

Every provider object is built once per process (models are loaded at start-up and
shared); per-call state lives in the streams they open.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from callbridge.providers.retry import OnRetry

__all__ = [
    "BatchVad",
    "LanguageModel",
    "LlmEvent",
    "Message",
    "PerCallTextToSpeech",
    "QuietAwareStream",
    "RemoteAgent",
    "RemoteEvent",
    "RemoteSession",
    "RemoteSignal",
    "SpeechToText",
    "SpeechToTextStream",
    "SttEvent",
    "SttSpeechStarted",
    "SttUtteranceEnd",
    "TextDelta",
    "TextToSpeech",
    "TextToSpeechCall",
    "ToolCall",
    "ToolSpec",
    "TranscriptUpdate",
    "TurnJudge",
    "VadModel",
    "VadStream",
    "close_now",
]


# ---------------------------------------------------------------- VAD


class VadStream(Protocol):
    """One call's detector state; cheap to create, the model behind it is shared."""

    def speech_probability(self, pcm16: bytes) -> float:
        """Feed one 20 ms frame (160 samples, 320 bytes); probability of speech, 0..1.

        Detectors with other window sizes buffer internally and report their latest window.
        """
        ...

    def reset(self) -> None: ...


class BatchVad(Protocol):
    """A VAD that scores many calls' frames in one run (Silero: one model run per round
    of windows, for every call at once). Its streams name it as ``stream.batch_vad``;
    a stream without that attribute is asked frame by frame."""

    def score_frames(
        self, pcm16: NDArray[np.int16], calls: Sequence[tuple[VadStream, int, int]]
    ) -> list[float]:
        """``pcm16``: the 20 ms frames of a tick, one after the other (160 samples
        each); ``calls``: (stream, first frame, frame count) for each call, its frames
        in order. Returns each frame's probability, exactly what
        ``stream.speech_probability(frame)`` would have said frame by frame (frames of
        no listed call: undefined)."""
        ...


class VadModel(Protocol):
    """A detector model loaded once per process."""

    name: str
    threshold: float

    def new_stream(self) -> VadStream: ...


# ---------------------------------------------------------------- STT


@dataclass(frozen=True, slots=True)
class TranscriptUpdate:
    """Text heard so far in the current span. ``is_final``: this span will not change;
    ``speech_final``: the provider's own endpointing saw the speaker stop;
    ``from_finalize``: the answer to ``finalize()``, the last of what was heard."""

    text: str
    is_final: bool
    speech_final: bool = False
    from_finalize: bool = False


@dataclass(frozen=True, slots=True)
class SttSpeechStarted:
    """The provider's own voice-activity event (Deepgram ``SpeechStarted``)."""


@dataclass(frozen=True, slots=True)
class SttUtteranceEnd:
    """The provider saw a long enough gap after the last word (Deepgram ``UtteranceEnd``)."""


SttEvent = TranscriptUpdate | SttSpeechStarted | SttUtteranceEnd


class SpeechToTextStream(Protocol):
    """One call's live transcription.

    ``push_audio`` and ``finalize`` never block: the call's owner task must not wait on a
    vendor socket. The stream's own task drains a bounded buffer.
    """

    def push_audio(self, ulaw: bytes) -> None:
        """One 20 ms μ-law 8 kHz frame of the caller, in order."""
        ...

    def finalize(self) -> None:
        """The engine decided the caller stopped: emit a final transcript for what was heard."""
        ...

    def events(self) -> AsyncIterator[SttEvent]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class QuietAwareStream(Protocol):
    """A transcriber stream that can send the caller's quiet audio in fewer, longer
    messages (Deepgram: a message per 200 ms instead of per 40 ms). Streams without it
    get every frame at their usual cadence."""

    def caller_quiet(self, quiet: bool) -> None:
        """The engine's word on the caller: no speech for a while (True), or speech
        again (False: what is held goes out at once, before this returns). Audio, its
        order and the control messages behind it are the same either way."""
        ...


class SpeechToText(Protocol):
    name: str

    async def open_stream(self, *, on_retry: OnRetry | None = None) -> SpeechToTextStream:
        """One call's stream. A client that retries inside the stream (a per-utterance
        endpoint) tells ``on_retry`` of each retry, so the call's record keeps it."""
        ...


# ---------------------------------------------------------------- LLM


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call (arguments are the JSON text the model produced)."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True, slots=True)
class Message:
    """One entry of the conversation the model sees.

    ``dtmf`` carries keypad digits for agents that branch on them; ``content`` always
    holds a plain-language rendering so a general LLM understands it too.
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    dtmf: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


LlmEvent = TextDelta | ToolCall


class LanguageModel(Protocol):
    """Streams a reply. Cancelling the consuming task (or ``aclose``) stops it."""

    name: str

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LlmEvent]: ...


# ---------------------------------------------------------------- TTS


class TextToSpeech(Protocol):
    """Speaks one text segment as μ-law 8 kHz bytes, in chunks of any size.

    Cancelling the consuming task (or ``aclose`` on the iterator) stops generation; no
    audio may arrive afterwards.
    """

    name: str

    def synthesize(self, text: str) -> AsyncIterator[bytes]: ...


class TextToSpeechCall(TextToSpeech, Protocol):
    """A TTS bound to one call's own vendor connection, opened when the call starts so no
    sentence pays for connection set-up; ``aclose`` when the call ends."""

    async def aclose(self) -> None: ...


@runtime_checkable
class PerCallTextToSpeech(Protocol):
    """A TTS that serves each call over one connection of its own (``for_call``
    returns at once; the connection opens in the background)."""

    name: str

    def for_call(self) -> TextToSpeechCall: ...


# ---------------------------------------------------------------- end of turn


class TurnJudge(Protocol):
    """An end-of-turn model loaded once per process, shared (and batched) by all calls."""

    name: str

    async def judge(self, pcm16: bytes) -> float:
        """The turn so far (8 kHz PCM, its last ≤ 8 s) → probability the caller finished."""
        ...


# ---------------------------------------------------------------- remote agents (bridge mode)

RemoteSignal = Literal["user-started", "interrupted", "bot-started", "bot-stopped", "ended"]
"""``user-started``: the caller began speaking; ``interrupted``: the agent cut its reply
for the caller; ``bot-started``/``bot-stopped``: the agent's speech begins/ends;
``ended``: the agent's call is over."""
RemoteEvent = bytes | RemoteSignal
"""μ-law 8 kHz audio from the agent, or a signal. Plain types, so a provider implements
this contract without importing the engine."""


class RemoteSession(Protocol):
    """One call on the agent's side."""

    def push_audio(self, ulaw: bytes) -> None:
        """One caller frame, in order; never blocks."""
        ...

    def events(self) -> AsyncIterator[RemoteEvent]:
        """Ends when the call is over; raises ``ProviderError`` if it was lost."""
        ...

    async def hangup(self) -> None:
        """End the agent's call and close the session."""
        ...

    async def aclose(self) -> None: ...


class RemoteAgent(Protocol):
    name: str

    async def open_session(self, *, on_retry: OnRetry | None = None) -> RemoteSession:
        """Start a call on the agent; ``ProviderError`` if it cannot (after its retries).
        ``on_retry`` hears of each retry, so the call's record keeps it."""
        ...


# ---------------------------------------------------------------- streams


async def close_now(stream: AsyncIterator[object]) -> None:
    """Close a provider's stream now, on cancel too: a vendor socket must not linger until
    the garbage collector gets to it. A plain iterator without ``aclose`` is left be."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        result = aclose()
        if inspect.isawaitable(result):
            await result
