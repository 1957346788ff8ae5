"""One load-generator process: many ``LeanCall``s on one event loop, one shared clock.

Why one scheduler and not a task per call: 200 callers each sleeping 20 ms cost 10 000
timer wake-ups a second. Here each call's media clock starts on one of four phases of
the 20 ms beat (a 5 ms grid), the calls of one phase form a group, and one wake-up
per grid point sends that group's frames, so at most 200 wake-ups a second serve any
number of calls, while the server still sees the calls' frames spread over the beat as real calls
do, not all at once. A frame is never sent early; how late it went out is each call's
``send_lag_ms``, the load generator's own health.

The loop is uvloop's (its C transports cost less a frame than asyncio's); every figure
is taken on ``time.monotonic`` (uvloop's ``loop.time()`` counts whole ms), the clock
uvloop's timers run on, at ms resolution: a wake-up is rounded up to a whole ms.

The parent learns when the steady state begins and ends through ``events_fd``: one
byte per call, ``E`` once its stream is up, ``F`` if it never came up, ``X`` when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import sys
import time
from typing import Any, cast

import httpx
import uvloop

from callbridge.errors import CallbridgeError
from callbridge.simulator import voice
from callbridge.simulator.dialer import CallOptions, TwimlPlan, dial, sign
from callbridge.simulator.lean import LeanCall, Script
from callbridge.simulator.leanws import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    Handshake,
    close_frame,
    encode_frame,
)
from callbridge.simulator.wire import new_sid

__all__ = ["LeanConnection", "Scheduler", "run_worker"]

OPEN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
PHASE_S = 0.005  # media clocks start on this grid: four phases of the 20 ms beat
PHASES = 4


def refused_at_voice(plan: TwimlPlan) -> dict[str, Any]:
    """``/voice`` answered with a polite ``<Say>`` and ``<Hangup/>`` (at capacity, or
    draining): a refusal, counted apart from the calls that failed."""
    said = " ".join(plan.says) or "nothing"
    return {"ok": False, "refused": True, "why": f"refused at /voice (said: {said!r})"}


class LeanConnection(asyncio.Protocol):
    """Moves bytes between one socket and one ``LeanCall``; no logic of its own."""

    def __init__(self, call: LeanCall, handshake: Handshake) -> None:
        loop = asyncio.get_running_loop()
        self.call = call
        self._time = time.monotonic
        self._handshake: Handshake | None = handshake
        self._parser = FrameParser()
        self._transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self._close_sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert self._handshake is not None
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(self._handshake.request())

    def data_received(self, data: bytes) -> None:
        now = self._time()
        try:
            if self._handshake is not None:
                rest = self._handshake.feed(data)
                if rest is None:
                    return
                self._handshake = None
                if self.opened.done():  # its owner gave up waiting (OPEN_TIMEOUT_S)
                    self.abort()
                    return
                self.opened.set_result(None)
                data = rest
            frames = self._parser.feed(data)
        except CallbridgeError as exc:
            self._fail(exc)
            return
        call = self.call
        for opcode, payload in frames:
            if opcode == OP_TEXT:
                if texts := call.on_message(now, payload):
                    self.send(texts)
            elif opcode == OP_PING:
                self._write(encode_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                if len(payload) >= 2:
                    call.close_code = int.from_bytes(payload[:2], "big")
                call.end("server")
                self.close()
                self.finish()
            elif opcode == OP_BINARY:
                call.protocol_errors.append("expected a JSON text frame, got a binary frame")

    def connection_lost(self, exc: Exception | None) -> None:
        self.call.end("server")
        for future in (self.opened, self.closed, self.finished):
            if not future.done():
                if future is self.opened:
                    future.set_exception(ConnectionError("closed during the handshake"))
                else:
                    future.set_result(None)

    def send(self, texts: list[str]) -> None:
        """One write for all of them (a beat's frame and the marks echoed with it)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if len(texts) == 1:
            transport.write(encode_frame(texts[0].encode()))
        else:
            transport.write(b"".join([encode_frame(t.encode()) for t in texts]))

    def close(self) -> None:
        """Send our close frame (once); the server's answer ends the socket."""
        if not self._close_sent:
            self._close_sent = True
            self._write(close_frame())

    def finish(self) -> None:
        """The call is over (the script ended, or the server left): wake its owner."""
        if not self.finished.done():
            self.finished.set_result(None)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _fail(self, exc: CallbridgeError) -> None:
        self.call.protocol_errors.append(str(exc))
        if not self.opened.done():
            self.opened.set_exception(exc)
        self.call.end("server")
        self.abort()


class Scheduler:
    """Calls grouped by the phase of their beat on the ``PHASE_S`` grid; one wake-up per
    grid point serves its whole group (no heap, no per-call ordering: every call in a
    group is due at the same instant)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._groups: list[list[LeanConnection]] = [[] for _ in range(PHASES)]
        self._point = -1  # the next grid point to serve (-1: none yet)
        self._calls = 0
        self._wake: asyncio.Future[None] | None = None

    def add(self, conn: LeanConnection) -> None:
        """Start ``conn``'s media clock on the next point of the ``PHASE_S`` grid."""
        point = math.ceil(time.monotonic() / PHASE_S)
        conn.send(conn.call.opening(point * PHASE_S))
        self._groups[point % PHASES].append(conn)
        self._calls += 1
        if self._point < 0 or point < self._point:
            self._point = point
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def run(self) -> None:
        loop, clock, groups = self._loop, time.monotonic, self._groups
        while True:
            if self._calls == 0 or self._point < 0:
                self._wake = loop.create_future()
                await self._wake
                continue
            # (a hair past the point, so float rounding never makes a frame due "early")
            target = self._point * PHASE_S + 1e-6
            now = clock()
            if target > now:
                self._wake = loop.create_future()
                # uvloop's timers count whole ms and may fire up to 1 ms early: rounded
                # up, never under 1 ms, so an early wake-up waits again, not spins
                delay_s = max(0.001, math.ceil((target - now) * 1000.0) / 1000.0)
                handle = loop.call_later(delay_s, _wake, self._wake)
                await self._wake
                handle.cancel()
                continue
            while self._point * PHASE_S + 1e-6 <= now:  # every point passed, in order
                group = groups[self._point % PHASES]
                self._point += 1
                if group:
                    groups[(self._point - 1) % PHASES] = self._serve(group, now)

    def _serve(self, group: list[LeanConnection], now: float) -> list[LeanConnection]:
        """Tick every call of ``group`` that is due; the ones still running stay."""
        kept: list[LeanConnection] = []
        for conn in group:
            call = conn.call
            if call.ended_by is not None:  # the server left while it waited
                self._calls -= 1
                continue
            if call.next_due_s > now:  # joined after this point: its clock starts later
                kept.append(conn)
                continue
            if texts := call.tick(now):
                conn.send(texts)
            if call.done:
                self._calls -= 1
                conn.finish()
            else:
                kept.append(conn)
        return kept


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _one_call(
    http: httpx.AsyncClient,
    scheduler: Scheduler,
    url: str,
    token: str,
    delay_s: float,
    script: Script,
    events_fd: int,
) -> dict[str, Any]:
    await asyncio.sleep(delay_s)
    options = CallOptions(url, token)
    loop = asyncio.get_running_loop()
    established = False
    try:
        plan = await dial(options, http)
        stream_url = plan.stream_url
        if stream_url is None:
            if plan.hangup:
                os.write(events_fd, b"F")
                return refused_at_voice(plan)
            raise CallbridgeError("the TwiML names no <Stream>")
        headers = {"X-Twilio-Signature": sign(token, stream_url), "User-Agent": "Twilio.TmeWs/1.0"}
        handshake = Handshake(options.connect_url(stream_url), headers)
        call = LeanCall(
            script,
            stream_sid=new_sid("MZ"),
            account_sid=options.account_sid,
            call_sid=options.call_sid,
            parameters=plan.parameters,
        )
        conn = LeanConnection(call, handshake)
        await loop.create_connection(lambda: conn, handshake.host, handshake.port)
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            await conn.opened
        scheduler.add(conn)
        established = True
        os.write(events_fd, b"E")
        await conn.finished
        os.write(events_fd, b"X")
        if call.ended_by == "caller":
            conn.send([call.closing()])
            conn.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await conn.closed
        conn.abort()
    except (CallbridgeError, OSError, TimeoutError, httpx.HTTPError) as exc:
        if not established:
            os.write(events_fd, b"F")
        return {"ok": False, "why": f"{type(exc).__name__}: {exc}"}
    return call.result()


async def run_worker(
    url: str,
    token: str,
    calls: int,
    duration_s: float,
    spread_s: float,
    offset: int,
    total: int,
    events_fd: int,
    question: str,
    interruption: str,
) -> list[dict[str, Any]]:
    """Call ``offset + i`` of ``total`` starts at ``spread_s * (offset + i) / total``."""
    voices = (voice.from_text(question), voice.from_text(interruption))
    # Measured: full collections paused the loop up to 8 ms (a late frame for every call
    # due then). The worker lives for one run and makes few cycles; it exits instead.
    gc.collect()
    gc.freeze()
    gc.disable()
    scheduler = Scheduler()
    ticker = asyncio.create_task(scheduler.run())
    async with httpx.AsyncClient(timeout=10.0) as http:
        tasks = [
            _one_call(
                http,
                scheduler,
                url,
                token,
                spread_s * (offset + i) / total,
                Script(voices[0], voices[1], duration_s),
                events_fd,
            )
            for i in range(calls)
        ]
        results = await asyncio.gather(*tasks)
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    return results


def worker_main(argv: list[str]) -> int:
    """``url token calls duration spread offset total events_fd question interruption``."""
    url, token, calls, duration, spread, offset, total, fd, question, interruption = argv
    # Other work on the client core (a test run, an editor) must not make our frames
    # late: that would be blamed on the server. Needs root or CAP_SYS_NICE; else as is.
    with contextlib.suppress(OSError):
        os.nice(-10)
    work = run_worker(
        url,
        token,
        int(calls),
        float(duration),
        float(spread),
        int(offset),
        int(total),
        int(fd),
        question,
        interruption,
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(work)
    json.dump(results, sys.stdout)
    return 0
