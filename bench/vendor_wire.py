"""The vendor clients' own CPU, against servers too cheap to be the bottleneck.

    .venv/bin/python bench/vendor_wire.py llm --chunks 30          # HTTP/1.1, 30 tokens
    .venv/bin/python bench/vendor_wire.py llm --chunks 30 --http2  # h2c (the fake app)
    .venv/bin/python bench/vendor_wire.py stt --calls 100          # Deepgram, paced 20 ms
    .venv/bin/python bench/vendor_wire.py stt --calls 100 --speech 0.4  # callers who talk
    PYTHONPATH=/tmp/old/src .venv/bin/python bench/vendor_wire.py llm   # another tree's code

``bench/vendors.py`` puts the tests' fakes (uvicorn, Starlette) on the other core, and on
a shared machine they are slower than the client they serve, which makes its numbers
swing by half. Here ``llm`` talks to a raw asyncio HTTP/1.1 server that writes canned
``chat.completion.chunk`` events (``--chunks`` of them, one network write every
``--gap-ms``, then the finish chunk and ``[DONE]``), or with ``--http2`` to the
chat-completions fake behind hypercorn (h2c). ``stt`` pushes a μ-law frame a call every
20 ms into Deepgram streams to the lean Deepgram fake and subtracts the same pacing
pushing into nothing. The server runs pinned to core 1, this process to core 0 on
uvloop; each of ``--runs`` windows gives µs of this process's CPU per request (per 40 ms
message for stt), printed as the minimum and the median.

``stt --speech 0.4``: each caller speaks that share of the time (``--utterance-s`` of
loud frames, then silence; the calls staggered), and the bench does what the engine
does around the stream: ``caller_quiet(True)`` 300 ms after the last speech frame,
``caller_quiet(False)`` with the first one (skipped where the stream has no such method,
an older tree), ``finalize`` 200 ms into each silence. It prints µs of CPU per call-second
of audio and the messages the fake received per call-second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

FRAME = b"\xff" * 160
LOUD = bytes([0x10]) * 160  # speech to the fake (its level test), as the tests' SPEECH
QUIET_AFTER_S = 0.3  # SttLink's DEFAULT_QUIET_AFTER_MS
FINALIZE_AFTER_S = 0.2  # the engine's early Finalize (speculateMs)
_CHUNK = ('data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,'
          '"model":"gpt-4o-mini","system_fingerprint":"fp_bench","choices":[{"index":0,'
          '"delta":{"content":" word%d"},"logprobs":null,"finish_reason":null}]}\n\n')
_LAST = ('data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,'
         '"model":"gpt-4o-mini","system_fingerprint":"fp_bench","choices":[{"index":0,'
         '"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _RawChat(asyncio.Protocol):
    """Answers every POST with a chunked event stream; reads nothing but the framing."""

    def __init__(self, chunks: int, gap_s: float) -> None:
        self.chunks, self.gap_s, self.buffer = chunks, gap_s, b""
        self.transport: asyncio.Transport | None = None
        self.answering: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            task = asyncio.ensure_future(self._answer())
            self.answering.add(task)
            task.add_done_callback(self.answering.discard)

    async def _answer(self) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
        for i in range(self.chunks):
            await asyncio.sleep(self.gap_s)
            self.transport.write(_chunked((_CHUNK % i).encode()))
        await asyncio.sleep(self.gap_s)
        self.transport.write(_chunked(_LAST.encode()) + b"0\r\n\r\n")


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        if args.vendor == "stt":
            from fakes.deepgram import FakeDeepgram

            dg = await stack.enter_async_context(
                FakeDeepgram(idle_timeout_s=600.0, lean_socket=True))
            env = {"DEEPGRAM_API_KEY": dg.api_key, "DEEPGRAM_BASE_URL": dg.base_url}
        elif args.http2:
            from fakes._h2 import Http2
            from fakes.openai_chat import FakeOpenAI
            from fakes.script import Reply

            reply = Reply(text=tuple(f" word{i}" for i in range(args.chunks)),
                          chunk_delay_s=args.gap_ms / 1000)
            fake = await stack.enter_async_context(FakeOpenAI(default=reply))
            h2 = await stack.enter_async_context(Http2(fake))
            env = {"OPENAI_API_KEY": "test-openai-key", "OPENAI_BASE_URL": h2.base_url}
        else:
            server = await loop.create_server(
                lambda: _RawChat(args.chunks, args.gap_ms / 1000), "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            env = {"OPENAI_API_KEY": "test-openai-key",
                   "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}
        print(json.dumps(env), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        if args.vendor == "stt":
            messages = sum(s.audio_messages + len(s.controls) for s in dg.sessions)
            print(json.dumps({"messages": messages}), flush=True)


async def bench_llm(args: argparse.Namespace, env: dict[str, str]) -> list[float]:
    from callbridge.providers.base import Message
    from callbridge.providers.llm import openai as openai_llm

    config = openai_llm.OpenAIConfig()
    if args.http2:
        llm = openai_llm.chat("openai", config, env["OPENAI_API_KEY"], env["OPENAI_BASE_URL"],
                              prior_knowledge=True)
    else:
        llm = openai_llm.build(config, env)
    hello = [Message("system", "Be brief."), Message("user", "What do I owe?")]
    loop = asyncio.get_running_loop()
    done = 0

    async def call(stop: float) -> None:
        nonlocal done
        while loop.time() < stop:
            with contextlib.suppress(Exception):  # hypercorn's GOAWAY after 1000 requests
                async for _ in llm.stream(hello, ()):
                    pass
            done += 1

    await asyncio.gather(*(call(loop.time() + 0.5) for _ in range(args.calls)))  # warm
    results = []
    for _ in range(args.runs):
        done = 0
        cpu = time.process_time()
        await asyncio.gather(*(call(loop.time() + args.seconds) for _ in range(args.calls)))
        results.append((time.process_time() - cpu) / max(done, 1) * 1e6)
    return results


async def bench_stt(args: argparse.Namespace, env: dict[str, str]) -> list[float]:
    from callbridge.providers.stt import deepgram

    stt = deepgram.build(deepgram.DeepgramConfig(), env)
    streams = await asyncio.gather(*(stt.open_stream() for _ in range(args.calls)))
    rounds = max(2, int(args.seconds / 0.02))

    class Deaf:
        def push_audio(self, ulaw: bytes) -> None:
            pass

    async def run(targets: list[Any]) -> float:
        cpu = time.process_time()
        for _ in range(rounds):
            for stream in targets:
                stream.push_audio(FRAME)
            await asyncio.sleep(0.02)
        return time.process_time() - cpu

    if args.speech:
        return await _bench_talking(args, streams, rounds)
    results = []
    for _ in range(args.runs):
        pacing = await run([Deaf()] * len(streams))
        full = await run(streams)
        results.append((full - pacing) / (len(streams) * rounds / 2) * 1e6)
    await asyncio.gather(*(s.aclose() for s in streams))
    return results


class _Talker:
    """One caller around one stream: speech ``share`` of each ``period_s``, from
    ``offset_s``; the engine's quiet word and early ``finalize`` around it."""

    def __init__(self, stream: Any, offset_s: float, period_s: float, speech_s: float) -> None:
        self.stream, self.offset_s, self.period_s, self.speech_s = (
            stream, offset_s, period_s, speech_s)
        self.tell_quiet = getattr(stream, "caller_quiet", None)
        self.silent_s = 0.0  # since the last speech frame
        self.quiet = False
        self.finalized = True

    def frame(self, t: float) -> None:
        speaking = (t + self.offset_s) % self.period_s < self.speech_s
        stream = self.stream
        stream.push_audio(LOUD if speaking else FRAME)
        if speaking:
            self.silent_s, self.finalized = 0.0, False
        else:
            self.silent_s += 0.02
            if not self.finalized and self.silent_s >= FINALIZE_AFTER_S:
                self.finalized = True
                stream.finalize()
        quiet = self.silent_s >= QUIET_AFTER_S
        if quiet is not self.quiet:
            self.quiet = quiet
            if self.tell_quiet is not None:
                self.tell_quiet(quiet)


async def _bench_talking(args: argparse.Namespace, streams: list[Any], rounds: int) -> list[float]:
    """µs of CPU per call-second of audio, callers speaking ``--speech`` of the time."""

    class Deaf:
        def push_audio(self, ulaw: bytes) -> None:
            pass

        def finalize(self) -> None:
            pass

        def caller_quiet(self, quiet: bool) -> None:
            pass

    period = args.utterance_s / args.speech
    quiet_aware = hasattr(streams[0], "caller_quiet")

    def talkers(targets: list[Any]) -> list[_Talker]:
        made = [_Talker(t, i * period / len(targets), period, args.utterance_s)
                for i, t in enumerate(targets)]
        for talker in made:
            talker.tell_quiet = talker.tell_quiet if quiet_aware else None
        return made

    real, deaf = talkers(streams), talkers([Deaf() for _ in streams])
    audio_s = [0.0]

    async def run(callers: list[_Talker], t0: float) -> float:
        cpu = time.process_time()
        for index in range(rounds):
            t = t0 + index * 0.02
            for caller in callers:
                caller.frame(t)
            await asyncio.sleep(0.02)
        return time.process_time() - cpu

    results = []
    t = 0.0
    for _ in range(args.runs):
        pacing = await run(deaf, t)
        full = await run(real, t)
        t += rounds * 0.02
        audio_s[0] += rounds * 0.02
        results.append((full - pacing) / (len(streams) * rounds * 0.02) * 1e6)
    await asyncio.gather(*(s.aclose() for s in streams))
    args.audio_call_s = audio_s[0] * len(streams)
    args.quiet_aware = quiet_aware
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vendor", choices=["llm", "stt"])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.0, help="per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=30, help="llm: tokens a reply")
    parser.add_argument("--gap-ms", type=float, default=2.0, help="llm: between tokens")
    parser.add_argument("--http2", action="store_true", help="llm: h2c to the fake")
    parser.add_argument("--speech", type=float, default=0.0,
                        help="stt: share of the time each caller speaks (0: frames only)")
    parser.add_argument("--utterance-s", type=float, default=2.0, help="stt: with --speech")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args))
        return 0
    cmd = [sys.executable, __file__, *sys.argv[1:], "--serve"]
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {0})
        cmd = ["taskset", "-c", "1", *cmd]
    server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    try:
        env = {**os.environ, **json.loads(server.stdout.readline())}
        import uvloop

        bench = bench_llm if args.vendor == "llm" else bench_stt
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = sorted(runner.run(bench(args, env)))
    finally:
        server.stdin.close()
        tail = server.stdout.read()
        server.wait(timeout=10)
    unit = "us_per_request" if args.vendor == "llm" else "us_per_message"
    shape: dict[str, Any] = ({"http": "2" if args.http2 else "1.1", "chunks": args.chunks}
                             if args.vendor == "llm" else {})
    if args.vendor == "stt" and args.speech:
        unit = "us_per_call_second"
        messages = json.loads(tail.strip().splitlines()[-1])["messages"]
        shape = {"speech": args.speech, "quiet_aware": args.quiet_aware,
                 "messages_per_call_second": round(messages / args.audio_call_s, 2)}
    print(json.dumps({"vendor": args.vendor, "calls": args.calls, **shape,
                      f"min_{unit}": round(results[0], 1),
                      f"median_{unit}": round(results[len(results) // 2], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
