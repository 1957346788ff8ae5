"""A deploy drops no call: a real ``callbridge serve`` with live calls gets SIGTERM.

The calls finish their scenario and hear all of it, ``/readyz`` turns 503 at once, a new
call is turned away politely, the process exits 0 and every turn is in the store. When
calls outlast ``CALLBRIDGE_DRAIN_TIMEOUT_S`` they hear a goodbye and are hung up at
Twilio (the REST fake sees it).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from support.twilio_api import FakeTwilioApi

from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions, dial
from callbridge.simulator.report import CallReport
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import parse_scenario
from callbridge.store.database import Database
from callbridge.store.repository import get_call

from .procs import ACCOUNT_SID, AUTH_TOKEN, ServerProcess, server_env

pytestmark = pytest.mark.deploy

TWO_TURNS = parse_scenario(
    """\
name: two-turns
timeout_s: 60
steps:
  - expect_bot_speech: 3000
  - wait_for_silence: {ms: 600, timeout_ms: 15000}
  - say: I would like to check my bill
  - expect_bot_speech: 4000
  - wait_for_silence: {ms: 700, timeout_ms: 20000}
  - say: thank you very much
  - expect_bot_speech: 4000
  - wait_for_silence: {ms: 700, timeout_ms: 20000}
  - hangup
limits:
  max_underruns: 0
""",
    source="two-turns.yaml",
)

STAYS_ON = parse_scenario(
    """\
name: stays-on
timeout_s: 60
steps:
  - expect_bot_speech: 3000
  - wait_for_silence: {ms: 600, timeout_ms: 15000}
  - expect_hangup: 30000
""",
    source="stays-on.yaml",
)


def _options(server: ServerProcess, api: FakeTwilioApi) -> CallOptions:
    options = CallOptions(server.base_url, AUTH_TOKEN, account_sid=ACCOUNT_SID)
    api.add_call(options.call_sid)
    return options


async def _first_503(client: httpx.AsyncClient, since: float, timeout_s: float) -> float:
    """Seconds from ``since`` until ``/readyz`` answers 503 (polled back to back)."""
    while time.monotonic() - since < timeout_s:
        if (await client.get("/readyz")).status_code == 503:
            return time.monotonic() - since
    raise AssertionError(f"/readyz still 200 after {timeout_s} s")


async def _stored(data_dir: Path, sid: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(role, kind, text) of each stored turn, and the event kinds, of one call."""
    db = Database(f"sqlite+aiosqlite:///{data_dir / 'callbridge.db'}")
    try:
        detail = await get_call(db, sid)
    finally:
        await db.dispose()
    assert detail is not None, f"call {sid} not stored"
    assert detail.call.ended_at is not None
    turns = [(t.role, t.kind, t.text) for t in detail.turns]
    return turns, [e.kind for e in detail.events]


async def test_sigterm_lets_live_calls_finish(tmp_path: Path, twilio_api: FakeTwilioApi) -> None:
    server = ServerProcess(
        server_env(tmp_path / "data", twilio_api.base_url), tmp_path / "server.log"
    )
    voices = prepare_voices(TWO_TURNS, tmp_path)
    await server.start()
    try:
        calls: list[LiveCall] = []
        running = [
            asyncio.create_task(
                run_scenario(TWO_TURNS, _options(server, twilio_api), voices, on_call=calls.append)
            )
            for _ in range(2)
        ]
        # Both callers are listening to the greeting: now the deploy begins.
        deadline = time.monotonic() + 20
        while not (len(calls) == 2 and all(c.bot_speech_starts for c in calls)):
            assert time.monotonic() < deadline, server.log_tail()
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as probe:
            assert (await probe.get("/readyz")).status_code == 200  # connected, warm
            server.signal(signal.SIGTERM)
            await _first_503(probe, time.monotonic(), timeout_s=2.0)
            # Not ready while the calls it holds are still on: how fast is bench/drain.py's.
            assert not any(task.done() for task in running)

        # A call that rings now is turned away politely, not dropped or connected.
        late = await dial(_options(server, twilio_api))
        assert late.stream_url is None and late.hangup
        assert any("try again" in said for said in late.says)

        reports: list[CallReport] = await asyncio.gather(*running)
        code = await server.wait(timeout_s=30)
    finally:
        server.kill()

    for report in reports:
        assert report.ok, report.failures
        assert report.hangup_by == "caller"  # the caller hung up, when it was done
        assert not report.protocol_errors  # underruns under a drain: bench/drain.py
        assert len(report.turns) == 2 and all(t.latency_ms is not None for t in report.turns)
    assert code == 0, server.log_tail()
    for report in reports:
        turns, _ = await _stored(tmp_path / "data", report.call_sid)
        assert [r for r, _, _ in turns].count("user") == 2, turns
        assert [k for r, k, _ in turns if r == "assistant"] == ["greeting", "answer", "answer"]
    (started,) = server.log_events("drain.started")
    assert started["live_calls"] == 2 and started["reason"] == "SIGTERM"
    (done,) = server.log_events("drain.done")
    assert (done["finished"], done["ended"]) == (2, 0)
    assert server.log_events("webhook.overflow")[0]["reason"] == "draining"


async def test_drain_timeout_says_goodbye_and_hangs_up(
    tmp_path: Path, twilio_api: FakeTwilioApi
) -> None:
    env = server_env(
        tmp_path / "data",
        twilio_api.base_url,
        CALLBRIDGE_DRAIN_TIMEOUT_S="1",
        CALLBRIDGE_DRAIN_MESSAGE="We are closing now, goodbye.",
    )
    server = ServerProcess(env, tmp_path / "server.log")
    await server.start()
    try:
        calls: list[LiveCall] = []
        options = _options(server, twilio_api)
        running = asyncio.create_task(run_scenario(STAYS_ON, options, {}, on_call=calls.append))
        deadline = time.monotonic() + 20
        while not (calls and calls[0].bot_speech_starts):
            assert time.monotonic() < deadline, server.log_tail()
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.5)  # the greeting is over; the caller just listens
        server.signal(signal.SIGTERM)
        signalled_at = time.monotonic()
        report = await running
        code = await server.wait(timeout_s=30)
    finally:
        server.kill()

    assert report.ok, report.failures
    assert report.hangup_by == "server"
    # The goodbye started after the drain timeout and before the hang-up.
    (call,) = calls
    goodbye = [t for t in call.bot_speech_starts if t > signalled_at + 0.9]
    assert goodbye, "no goodbye after the drain timeout"
    hangups = [
        r
        for r in twilio_api.requests
        if r.path.endswith(f"/Calls/{options.call_sid}.json")
        and r.form.get("Status") == ["completed"]
    ]
    assert len(hangups) == 1, twilio_api.requests
    assert code == 0, server.log_tail()
    turns, events = await _stored(tmp_path / "data", options.call_sid)
    assert ("assistant", "goodbye", "We are closing now, goodbye.") in turns
    assert "end_requested" in events
    (done,) = server.log_events("drain.done")
    assert done["ended"] == 1


async def test_a_second_signal_stops_at_once(tmp_path: Path, twilio_api: FakeTwilioApi) -> None:
    server = ServerProcess(server_env(tmp_path / "data", twilio_api.base_url), tmp_path / "s.log")
    await server.start()
    try:
        calls: list[LiveCall] = []
        running = asyncio.create_task(
            run_scenario(STAYS_ON, _options(server, twilio_api), {}, on_call=calls.append)
        )
        deadline = time.monotonic() + 20
        while not (calls and calls[0].bot_speech_starts):
            assert time.monotonic() < deadline, server.log_tail()
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as probe:
            server.signal(signal.SIGTERM)
            await _first_503(probe, time.monotonic(), timeout_s=2.0)
        assert server.proc is not None and server.proc.poll() is None  # draining, waiting
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        code = await server.wait(timeout_s=10)
        stopped_s = time.monotonic() - t0
        await running
    finally:
        server.kill()
    assert stopped_s < 3, f"took {stopped_s:.1f} s after the second signal"
    assert code == -signal.SIGTERM  # not a clean drain, and it says so
    assert server.log_events("drain.aborted")
