"""espeak-ng through ctypes: the TTS that is always there (no key, no network, no apt).

``espeakng-loader`` ships libespeak-ng and its data. The library is one global,
non-thread-safe synthesizer, so every synthesis holds one process-wide lock and runs on
one dedicated worker thread: the event loop never waits on it, and a queue of calls
waiting for the lock never starves the default thread pool. Synthesis is synchronous
inside that thread; a callback hands each ~100 ms of 22 050 Hz audio over, which is
resampled once to 8 kHz (soxr) and μ-law encoded before it reaches the loop.

Cancelling the consumer sets a flag the callback checks, and espeak aborts at its next
buffer, so the worker is free again within milliseconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import threading
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Literal

import espeakng_loader
from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from callbridge.audio import ulaw
from callbridge.audio.resample import StreamResampler, resample
from callbridge.errors import ConfigError, ProviderError
from callbridge.providers.registry import ProviderBlock, ProviderSpec

__all__ = ["SPEC", "EspeakBlock", "EspeakTts", "synthesize_pcm"]

OUTPUT_RATE_HZ = 8000
CHUNK_MS = 120
_CHUNK_PCM_BYTES = OUTPUT_RATE_HZ * 2 * CHUNK_MS // 1000

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE = 1
_EE_OK = 0
_BUFFER_MS = 100
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

# A sink gets raw PCM16 at the library's rate; returning False aborts the synthesis.
Sink = Callable[[bytes], bool]


class EspeakBlock(ProviderBlock):
    """``voice: {provider: espeak, voiceId: en-us, rate: 175}`` (rate in words per minute)."""

    model_config = ConfigDict(alias_generator=to_camel)

    provider: Literal["espeak"] = "espeak"
    voice_id: str = Field("en-us", min_length=1)
    rate: int = Field(175, ge=80, le=450)


class EspeakTts:
    """The ``TextToSpeech`` provider; voice and rate are fixed per assistant."""

    name = "espeak"

    def __init__(self, voice: str = "en-us", rate_wpm: int = 175) -> None:
        self._engine = engine()
        self._engine.check_voice(voice)
        self.voice = voice
        self.rate_wpm = rate_wpm

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Yield μ-law 8 kHz chunks of ~120 ms as espeak produces them."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        stop = threading.Event()

        def deliver(item: bytes | None) -> None:
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:  # the loop closed under an abandoned stream: nobody listens
                stop.set()

        def work() -> None:
            resampler = StreamResampler(self._engine.rate_hz, OUTPUT_RATE_HZ)
            pending = bytearray()

            def sink(pcm16: bytes) -> bool:
                if stop.is_set():
                    return False
                pending.extend(resampler.process(pcm16))
                if len(pending) >= _CHUNK_PCM_BYTES:
                    deliver(ulaw.encode(bytes(pending)))
                    pending.clear()
                return True

            try:
                self._engine.synth(text, self.voice, self.rate_wpm, sink)
                if not stop.is_set():
                    pending.extend(resampler.flush())
                    if pending:
                        deliver(ulaw.encode(bytes(pending)))
            finally:
                deliver(None)

        job = self._engine.submit(work)
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
            await asyncio.wrap_future(job)  # re-raise the worker's error, if any
        finally:
            stop.set()
            if not job.cancel():  # started: wait the few ms until espeak has aborted
                await asyncio.wait({asyncio.wrap_future(job)})

    def synthesize_pcm(self, text: str, rate_hz: int = OUTPUT_RATE_HZ) -> bytes:
        """Blocking: the whole text as PCM16 at ``rate_hz`` with this provider's voice."""
        return synthesize_pcm(text, rate_hz, self.voice, self.rate_wpm)


def synthesize_pcm(
    text: str, rate_hz: int = OUTPUT_RATE_HZ, voice: str = "en-us", rate_wpm: int = 175
) -> bytes:
    """Blocking: speak ``text`` to PCM16 mono at ``rate_hz`` (tests and the simulator's
    caller use it; never call it on the event loop of a server)."""
    lib = engine()
    parts: list[bytes] = []

    def sink(pcm16: bytes) -> bool:
        parts.append(pcm16)
        return True

    lib.synth(text, voice, rate_wpm, sink)
    return resample(b"".join(parts), lib.rate_hz, rate_hz)


class _Engine:
    """The process's one libespeak-ng: initialised once, used under one lock."""

    def __init__(self) -> None:
        try:
            self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as exc:
            raise ConfigError(f"espeak: cannot load libespeak-ng: {exc}") from exc
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        rate_hz = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate_hz <= 0:
            raise ConfigError(f"espeak: espeak_Initialize failed ({rate_hz}) with data {data_path}")
        self.rate_hz: int = rate_hz
        self._lock = threading.Lock()
        self._sink: Sink | None = None
        self._error: BaseException | None = None
        self._voice: str | None = None
        self._rate_wpm: int | None = None
        self._callback = _SynthCallback(self._on_audio)  # keep a reference: C holds it
        lib.espeak_SetSynthCallback(self._callback)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="espeak")

    def submit(self, work: Callable[[], None]) -> concurrent.futures.Future[None]:
        return self._executor.submit(work)

    def check_voice(self, voice: str) -> None:
        """Fail at start-up, not mid-call, on a voice espeak does not know."""
        with self._lock:
            self._set_voice(voice)

    def synth(self, text: str, voice: str, rate_wpm: int, sink: Sink) -> None:
        """Blocking synthesis of ``text``; ``sink`` gets each buffer of PCM16."""
        if not text.strip():
            return  # espeak would still emit a few ms of noise floor
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            self._set_voice(voice)
            if rate_wpm != self._rate_wpm:
                self._lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
                self._rate_wpm = rate_wpm
            self._sink, self._error = sink, None
            try:
                status = self._lib.espeak_Synth(
                    data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                )
            finally:
                self._sink = None
            if self._error is not None:
                raise self._error
            if status != _EE_OK:
                raise ProviderError("espeak", f"espeak_Synth returned {status}", retryable=False)

    def _set_voice(self, voice: str) -> None:
        if voice == self._voice:
            return
        if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            self._voice = None
            raise ConfigError(f"espeak: unknown voice {voice!r} (try 'en-us', 'en', 'de', 'fr')")
        self._voice = voice

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], samples: int, events: int) -> int:
        """Called by espeak inside ``espeak_Synth`` on the same thread; 1 aborts."""
        sink = self._sink
        if sink is None:
            return 1
        if samples <= 0 or not wav:
            return 0
        try:
            keep_going = sink(ctypes.string_at(wav, samples * 2))
        except BaseException as exc:  # ctypes would print and drop it; re-raised in synth
            self._error = exc
            return 1
        return 0 if keep_going else 1


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def engine() -> _Engine:
    """Load and initialise libespeak-ng once per process (at build time for servers)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


def _build(block: EspeakBlock, env: Mapping[str, str]) -> EspeakTts:
    return EspeakTts(block.voice_id, block.rate)


SPEC = ProviderSpec(kind="tts", name="espeak", config=EspeakBlock, build=_build)
