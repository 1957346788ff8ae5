"""What the vendor clients cost the server's core: CPU per request, message and chunk.

    .venv/bin/python bench/vendors.py                    # llm, stt, tts; 20 calls, 10 s each
    .venv/bin/python bench/vendors.py llm --calls 50 --seconds 20
    .venv/bin/python bench/vendors.py stt --profile /tmp/stt.prof   # cProfile the client
    .venv/bin/python bench/vendors.py stt --calls 100 --chunk-ms 40  # Deepgram message size
    .venv/bin/python bench/vendors.py llm --http2        # the model over HTTP/2, as OpenAI

The production clients (``build()`` of providers/llm/openai.py, stt/deepgram.py,
tts/elevenlabs.py with its per-call socket) talk to the wire-level fakes of
``tests/fakes``, which run in a process of their own on the other core (``taskset``), so
the fakes' CPU is not counted. This process is pinned to core 0 and its CPU time
(``time.process_time``) is taken over the run only (set-up and connecting excluded):

- ``llm``: each call streams one request after another (a reply of ``--chunks`` SSE
  chunks, as a real model streams a short answer token by token); µs per request.
  The fake speaks HTTP/1.1 (one connection per request in flight); ``--http2`` puts it
  behind hypercorn, HTTP/2 over plain TCP, as api.openai.com answers over TLS (every
  call's requests on one connection).
- ``stt``: each call pushes a 20 ms μ-law frame every 20 ms, as the engine does; µs per
  second of a call's audio, all of it and the client's alone (the same 20 ms timers
  pushing into nothing are measured first and subtracted); the fake counts the binary
  messages it received.
- ``tts``: each call asks its socket for one sentence after another (100 ms audio
  chunks); µs per sentence and per audio chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from callbridge.errors import ProviderError  # noqa: E402
from callbridge.providers.base import Message  # noqa: E402
from callbridge.providers.llm import openai as openai_llm  # noqa: E402
from callbridge.providers.stt import deepgram  # noqa: E402
from callbridge.providers.tts import elevenlabs  # noqa: E402

SERVER_CORE, FAKES_CORE = 0, 1
FRAME_S = 0.020
SILENCE = b"\xff" * 160  # μ-law silence, 20 ms
SENTENCE = "Your last invoice was forty two dollars."
HELLO = [Message("system", "Be brief."), Message("user", "What do I owe?")]


# ------------------------------------------------------------------ the fakes' process


async def serve_fakes(chunks: int) -> None:
    from fakes._h2 import Http2
    from fakes.deepgram import FakeDeepgram
    from fakes.elevenlabs import FakeElevenLabs
    from fakes.openai_chat import FakeOpenAI
    from fakes.script import Reply

    words = tuple(f" word{i}" for i in range(chunks))
    reply = Reply(text=words, first_token_delay_s=0.05, chunk_delay_s=0.005)
    async with (
        FakeDeepgram(idle_timeout_s=600.0) as dg,
        FakeOpenAI(default=reply) as oa,
        Http2(oa) as oa_h2,
        FakeElevenLabs(ms_per_char=25, chunk_ms=100, first_audio_delay_s=0.02,
                       inactivity_timeout_s=600.0) as el,
    ):
        print(json.dumps({
            "DEEPGRAM_API_KEY": dg.api_key, "DEEPGRAM_BASE_URL": dg.base_url,
            "OPENAI_API_KEY": "test-openai-key", "OPENAI_BASE_URL": oa.base_url,
            "OPENAI_H2C_BASE_URL": oa_h2.base_url,
            "ELEVENLABS_API_KEY": el.api_key, "ELEVENLABS_BASE_URL": el.base_url,
        }), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print(json.dumps({"deepgram_messages": sum(s.audio_messages for s in dg.sessions),
                          "deepgram_frames": sum(s.frames for s in dg.sessions)}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# ------------------------------------------------------------------ the measured clients


class Meter:
    """Process CPU over the measured window only."""

    def __init__(self, profile: cProfile.Profile | None) -> None:
        self.profile = profile
        self.cpu = self.wall = 0.0

    def __enter__(self) -> Meter:
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        if self.profile is not None:
            self.profile.enable()
        return self

    def __exit__(self, *_: object) -> None:
        if self.profile is not None:
            self.profile.disable()
        self.cpu = time.process_time() - self._cpu
        self.wall = time.perf_counter() - self._wall


async def bench_llm(env: Mapping[str, str], calls: int, seconds: float,
                    profile: cProfile.Profile | None, pool: int = 0,
                    http2: bool = False) -> dict[str, Any]:
    if http2:
        llm = openai_llm.chat("openai", openai_llm.OpenAIConfig(), env["OPENAI_API_KEY"],
                              env["OPENAI_H2C_BASE_URL"], prior_knowledge=True)
    else:
        llm = openai_llm.build(openai_llm.OpenAIConfig(), env)
    await asyncio.gather(*(llm.warm() for _ in range(max(calls, pool))))
    done = failed = 0
    chunks = 0

    async def call(stop: float) -> None:
        nonlocal done, chunks, failed
        loop = asyncio.get_running_loop()
        while loop.time() < stop:
            try:
                async for _ in llm.stream(HELLO, ()):
                    chunks += 1
            except ProviderError as exc:  # e.g. hypercorn's GOAWAY after 1000 requests
                failed += 1
                if failed == 1:
                    print(json.dumps({"first_failure": str(exc)}), file=sys.stderr)
            done += 1

    with Meter(profile) as meter:
        stop = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(*(call(stop) for _ in range(calls)))
    return {"http": "2" if http2 else "1.1", "pool": max(calls, pool), "requests": done,
            "failed": failed, "text_chunks": chunks,
            "cpu_s": round(meter.cpu, 3),
            "us_per_request": round(meter.cpu / max(done, 1) * 1e6),
            "cpu_share": round(meter.cpu / meter.wall, 3)}


async def bench_stt(env: Mapping[str, str], calls: int, seconds: float,
                    profile: cProfile.Profile | None, chunk_ms: int = 0) -> dict[str, Any]:
    config = deepgram.DeepgramConfig(**({"chunk_ms": chunk_ms} if chunk_ms else {}))
    stt = deepgram.build(config, env)
    streams = await asyncio.gather(*(stt.open_stream() for _ in range(calls)))
    loop = asyncio.get_running_loop()
    frames = 0

    async def call(stream: Any, stop: float) -> None:
        # One timer per call, as the engine has today: a frame every 20 ms.
        nonlocal frames
        due = loop.time()
        while due < stop:
            stream.push_audio(SILENCE)
            frames += 1
            due += FRAME_S
            await asyncio.sleep(max(0.0, due - loop.time()))

    class Deaf:
        def push_audio(self, ulaw: bytes) -> None:
            pass

    with Meter(None) as pacing:  # the 20 ms timers alone, to subtract
        await asyncio.gather(*(call(Deaf(), loop.time() + seconds / 2) for _ in streams))
    pacing_per_frame = pacing.cpu / max(frames, 1)
    frames = 0
    with Meter(profile) as meter:
        stop = loop.time() + seconds
        await asyncio.gather(*(call(s, stop) for s in streams))
        await asyncio.sleep(0.1)  # the last chunks go out
    await asyncio.gather(*(s.aclose() for s in streams))
    call_seconds = frames * FRAME_S
    client = meter.cpu - pacing_per_frame * frames
    return {"frames": frames, "cpu_s": round(meter.cpu, 3),
            "us_per_call_second": round(meter.cpu / call_seconds * 1e6),
            "client_us_per_call_second": round(client / call_seconds * 1e6),
            "cpu_share": round(meter.cpu / meter.wall, 3)}


async def bench_tts(env: Mapping[str, str], calls: int, seconds: float,
                    profile: cProfile.Profile | None) -> dict[str, Any]:
    tts = elevenlabs.build(elevenlabs.ElevenLabsConfig(voice_id="bench"), env)
    sockets = [tts.for_call() for _ in range(calls)]
    sentences = chunks = 0

    window = {"stop": float("inf")}  # set when every socket is up and has spoken once

    async def call(socket: Any) -> None:
        nonlocal sentences, chunks
        loop = asyncio.get_running_loop()
        async for _ in socket.synthesize("Hello."):  # connects before the window
            pass
        await start.wait()
        while loop.time() < window["stop"]:
            async for _ in socket.synthesize(SENTENCE):
                chunks += 1
            sentences += 1

    start = asyncio.Event()
    tasks = [asyncio.create_task(call(s)) for s in sockets]
    await asyncio.sleep(1.0)
    with Meter(profile) as meter:
        window["stop"] = asyncio.get_running_loop().time() + seconds
        start.set()
        await asyncio.gather(*tasks)
    await asyncio.gather(*(s.aclose() for s in sockets))
    return {"sentences": sentences, "audio_chunks": chunks, "cpu_s": round(meter.cpu, 3),
            "us_per_sentence": round(meter.cpu / max(sentences, 1) * 1e6),
            "us_per_chunk": round(meter.cpu / max(chunks, 1) * 1e6),
            "cpu_share": round(meter.cpu / meter.wall, 3)}


def _loop_factory() -> Any:
    """uvloop, as the server runs (uvicorn's "auto" loop), when it is installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


BENCHES = {"llm": bench_llm, "stt": bench_stt, "tts": bench_tts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vendors", nargs="*", help="llm, stt, tts (default: all)")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunks", type=int, default=30, help="SSE text chunks per reply")
    parser.add_argument("--pool", type=int, default=0,
                        help="llm: open this many connections first (idle ones in the pool)")
    parser.add_argument("--http2", action="store_true",
                        help="llm: HTTP/2 (h2c) to the fake, as to api.openai.com")
    parser.add_argument("--chunk-ms", type=int, default=0,
                        help="stt: audio per Deepgram message (default: the config's)")
    parser.add_argument("--profile", help="write a cProfile of the measured windows here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    vendors = args.vendors or list(BENCHES)
    if unknown := set(vendors) - set(BENCHES):
        parser.error(f"unknown vendor(s): {', '.join(sorted(unknown))}")
    if args.serve:
        asyncio.run(serve_fakes(args.chunks))
        return 0
    cmd = [sys.executable, __file__, "--serve", "--chunks", str(args.chunks)]
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {SERVER_CORE})
        cmd = ["taskset", "-c", str(FAKES_CORE), *cmd]
    fakes = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert fakes.stdin is not None and fakes.stdout is not None
    try:
        env = {**os.environ, **json.loads(fakes.stdout.readline())}
        profile = cProfile.Profile() if args.profile else None
        for name in vendors:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                extra = ({"pool": args.pool, "http2": args.http2} if name == "llm" else
                         {"chunk_ms": args.chunk_ms} if name == "stt" else {})
                result = runner.run(
                    BENCHES[name](env, args.calls, args.seconds, profile, **extra))
            print(json.dumps({"vendor": name, "calls": args.calls, **result}), flush=True)
        fakes.stdin.write("counts\n")
        fakes.stdin.flush()
        counts = json.loads(fakes.stdout.readline())
        if "stt" in vendors:
            print(json.dumps({"fake": "deepgram", **counts}), flush=True)
        if profile is not None:
            profile.dump_stats(args.profile)
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    finally:
        fakes.stdin.close()
        fakes.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
