"""What a deploy costs: SIGTERM to a real ``callbridge serve`` holding live calls.

    .venv/bin/python bench/drain.py [ROUNDS] [CALLS]

Each round starts a server (the fake assistant, SQLite in a temporary folder), places
CALLS simulated calls, sends SIGTERM while they listen to the greeting, and measures how
long ``/readyz`` took to answer 503 and how long the process took to exit after the last
call ended (the drain's quiet period, the store flush and shutdown). Every call must end
as its scenario says; only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions
from callbridge.simulator.metrics import percentile
from callbridge.simulator.runner import run_scenario
from callbridge.simulator.scenario import parse_scenario

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-drain-token-0123456789"
SCENARIO = parse_scenario(
    """\
name: listen-then-leave
timeout_s: 60
steps:
  - expect_bot_speech: 5000
  - wait_for_silence: {ms: 600, timeout_ms: 15000}
  - pause: 1500
  - hangup
""",
    source="drain-bench.yaml",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(folder: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "CALLBRIDGE_"))}
    env.update(
        TWILIO_AUTH_TOKEN=TOKEN,
        CALLBRIDGE_DATA_DIR=str(folder),
        CALLBRIDGE_ASSISTANT=str(ROOT / "examples" / "assistant-fake.yaml"),
        CALLBRIDGE_HOST="127.0.0.1",
        CALLBRIDGE_PORT=str(port),
        CALLBRIDGE_MAX_CALLS="0",  # no limit: CALLS may exceed the default 30, and at the
        # limit /readyz would already be 503 before the SIGTERM this measures
        DATABASE_URL="",
        LOG_LEVEL="WARNING",
    )
    log = (folder / "server.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "callbridge.cli", "serve"], env=env, stdout=log, stderr=log
    )


async def _round(folder: Path, calls: int) -> tuple[float, float]:
    port = _free_port()
    proc = _spawn(folder, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    if proc.poll() is not None:
                        raise SystemExit(f"server exited: see {folder / 'server.log'}") from None
                await asyncio.sleep(0.05)
            live: list[LiveCall] = []
            tasks = [
                asyncio.create_task(
                    run_scenario(SCENARIO, CallOptions(base, TOKEN), {}, on_call=live.append)
                )
                for _ in range(calls)
            ]
            await _until(lambda: len(live) == calls and all(c.bot_speech_starts for c in live))
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            while (await client.get("/readyz")).status_code != 503:
                pass
            flip_ms = (time.monotonic() - t0) * 1000
        reports = await asyncio.gather(*tasks)
        last_end = time.monotonic()
        failed = [r.failures for r in reports if not r.ok]
        if failed:
            raise SystemExit(f"calls failed during the drain: {failed}")
        await _until(lambda: proc.poll() is not None)
        if proc.returncode != 0:
            raise SystemExit(f"exit code {proc.returncode}: see {folder / 'server.log'}")
        return flip_ms, time.monotonic() - last_end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        await asyncio.sleep(0.01)


async def main(rounds: int, calls: int) -> None:
    flips: list[float] = []
    exits: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            folder = Path(tmp) / f"round{i}"
            folder.mkdir()
            flip_ms, exit_s = await _round(folder, calls)
            flips.append(flip_ms)
            exits.append(exit_s)
    print(f"{rounds} rounds, {calls} live calls each, all calls finished, exit code 0")
    print(
        f"/readyz → 503 after SIGTERM: p50 {percentile(flips, 50):.1f} ms, max {max(flips):.1f} ms"
    )
    print(
        f"exit after the last call ended: p50 {percentile(exits, 50):.2f} s, max {max(exits):.2f} s"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*(args + [10, 5][len(args) :])))
