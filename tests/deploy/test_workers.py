"""``callbridge serve --workers 2``: two worker processes on one port serve calls, and one
SIGTERM to the group drains both."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from store.pg import fresh_database
from support.twilio_api import FakeTwilioApi

from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import parse_scenario

from .procs import ACCOUNT_SID, API_TOKEN, AUTH_TOKEN, ServerProcess, server_env

pytestmark = pytest.mark.deploy

GREETING = parse_scenario(
    """\
name: greeting
timeout_s: 30
steps:
  - expect_bot_speech: 4000
  - wait_for_silence: {ms: 500, timeout_ms: 15000}
  - hangup
""",
    source="greeting.yaml",
)

ONE_TURN = parse_scenario(
    """\
name: one-turn
timeout_s: 60
steps:
  - expect_bot_speech: 4000
  - wait_for_silence: {ms: 600, timeout_ms: 15000}
  - say: I would like to check my bill
  - expect_bot_speech: 5000
  - wait_for_silence: {ms: 700, timeout_ms: 20000}
  - hangup
""",
    source="one-turn.yaml",
)


def _parent_of(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid …"; comm may hold spaces, so split after ")".
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


async def test_two_workers_share_the_port_and_drain_together(
    tmp_path: Path, twilio_api: FakeTwilioApi, postgres_url: str
) -> None:
    env = server_env(
        tmp_path / "data", twilio_api.base_url, DATABASE_URL=await fresh_database(postgres_url)
    )
    group = ServerProcess(env, tmp_path / "server.log", args=("--workers", "2"))
    voices = prepare_voices(ONE_TURN, tmp_path)
    await group.start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            # Both workers listen once fresh connections reach two different instances.
            seen: set[str] = set()
            deadline = time.monotonic() + 30
            while len(seen) < 2:
                assert time.monotonic() < deadline, f"only {seen} answered:\n{group.log_tail()}"
                async with httpx.AsyncClient(trust_env=False) as fresh:
                    r = await fresh.get(f"{group.base_url}/readyz")
                if r.status_code == 200:
                    seen.add(r.json()["instance"])

            def options() -> CallOptions:
                o = CallOptions(group.base_url, AUTH_TOKEN, account_sid=ACCOUNT_SID)
                twilio_api.add_call(o.call_sid)
                return o

            quick = await asyncio.gather(
                *(run_scenario(GREETING, options(), {}) for _ in range(12))
            )
            assert all(r.ok for r in quick), [r.failures for r in quick if not r.ok]
            instances = set()
            for r in quick:
                got = await client.get(
                    f"{group.base_url}/api/calls/{r.call_sid}",
                    headers={"Authorization": f"Bearer {API_TOKEN}"},
                )
                instances.add(got.json()["call"]["instance"])
            pids = {int(name.rsplit("-", 1)[1]) for name in instances}
            assert len(pids) == 2, instances
            assert group.proc is not None
            assert {_parent_of(pid) for pid in pids} == {group.proc.pid}

            # One SIGTERM to the supervisor: every worker drains its own calls.
            calls: list[LiveCall] = []
            running = [
                asyncio.create_task(run_scenario(ONE_TURN, options(), voices, on_call=calls.append))
                for _ in range(4)
            ]
            deadline = time.monotonic() + 20
            while not (len(calls) == 4 and all(c.bot_speech_starts for c in calls)):
                assert time.monotonic() < deadline, group.log_tail()
                await asyncio.sleep(0.02)
            group.signal(signal.SIGTERM)
            reports = await asyncio.gather(*running)
            code = await group.wait(timeout_s=60)
    finally:
        group.kill()

    assert all(r.ok and r.hangup_by == "caller" for r in reports), [r.failures for r in reports]
    assert code == 0, group.log_tail()
    drained = {e.get("live_calls") for e in group.log_events("drain.started")}
    assert len(group.log_events("drain.done")) == 2 and drained, group.log_tail()
    assert {e["codes"] for e in group.log_events("workers.stopped")} == {"0,0"}
