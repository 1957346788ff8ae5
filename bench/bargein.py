"""Barge-in reaction with the default assistant (Silero VAD, 200 ms debounce): the
caller talks over the greeting; measured on the caller's clock from the speech onset
in the audio it sent to the `clear` it received, and how much stale bot audio it heard.

    .venv/bin/python bench/bargein.py [CALLS] [CONCURRENCY]

The server runs in this process (uvicorn on 127.0.0.1), so the figures include the
whole socket path; only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

import uvicorn

from callbridge.server.app import create_app, uvicorn_config
from callbridge.settings import load_settings
from callbridge.simulator.dialer import CallOptions
from callbridge.simulator.metrics import percentile
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import parse_scenario
from callbridge.voice_agent import build_runner

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-bargein-token-0123456789"
SAYINGS = (
    "Wait, stop, I need help with my account.",
    "Hello? Can I talk to someone?",
    "Sorry to interrupt, what was that?",
    "No, I want billing please.",
)


def _scenario(saying: str, after_ms: int) -> str:
    return f"""
name: bargein-bench
steps:
  - interrupt: {{after_bot_speech_ms: {after_ms}, say: "{saying}"}}
  - expect_clear: 2000
  - hangup
"""


async def _main(calls: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as data:
        settings = load_settings(
            auth_token=TOKEN, stream_secret="b" * 32, data_dir=Path(data), max_calls=0
        )
        runner = build_runner(ROOT / "examples" / "assistant.yaml", {})
        server = uvicorn.Server(uvicorn_config(create_app(settings, runner), "127.0.0.1", 0))
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn has no started event
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        scenarios = []
        for i in range(calls):
            scenario = parse_scenario(_scenario(SAYINGS[i % len(SAYINGS)], 800 + 137 * (i % 9)))
            scenarios.append((scenario, prepare_voices(scenario, ROOT)))
        limit = asyncio.Semaphore(concurrency)
        reactions: list[float] = []
        stale: list[float] = []
        failed = 0

        async def one(index: int) -> None:
            nonlocal failed
            scenario, voices = scenarios[index]
            async with limit:
                report = await run_scenario(scenario, CallOptions(url, TOKEN), voices)
            turns = [t for t in report.turns if t.barge_in and t.bargein_ms is not None]
            if not report.ok or not turns:
                failed += 1
                return
            reactions.append(turns[0].bargein_ms or 0.0)
            stale.append(turns[0].stale_ms)

        await asyncio.gather(*(one(i) for i in range(calls)))
        server.should_exit = True
        await serving

    print(f"barge-in over the greeting, default assistant: {calls} calls, {concurrency} at once")
    for name, values in (("onset → clear", reactions), ("stale audio heard", stale)):
        p50, p95 = percentile(values, 50), percentile(values, 95)
        print(
            f"  {name:<18} p50 {p50 or 0:6.0f} ms  p95 {p95 or 0:6.0f} ms  "
            f"max {max(values, default=0):6.0f} ms"
        )
    print(f"  failed calls       {failed}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(_main(*(args + [20, 4][len(args) :])))
