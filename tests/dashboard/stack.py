"""The real server (engine, store, recordings) and a fake Twilio REST API, on an event
loop in a thread of their own, so synchronous Playwright tests can drive a browser
while simulated calls run.

    stack = Stack(tmp); stack.start()
    stack.run(coroutine)             # run on the server's loop, wait for the result
    future = stack.submit(coroutine)  # run in the background (a concurrent Future)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from support.server import running_server
from support.twilio_api import FakeTwilioApi, fake_twilio_api

from callbridge.server.app import create_app
from callbridge.server.call_log import CallLog
from callbridge.settings import Settings, load_settings
from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions, dial
from callbridge.simulator.report import CallReport
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import Scenario
from callbridge.store import Store
from callbridge.voice_agent import build_runner

ROOT = Path(__file__).resolve().parents[2]
ASSISTANT = ROOT / "examples" / "assistant.yaml"
AUTH_TOKEN = "dash-auth-token-0123456789abcdef"
API_TOKEN = "dash-api-token-" + "q" * 24
ACCOUNT_SID = "AC" + "7" * 32

T = TypeVar("T")


class Stack:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.base_url = ""
        self.settings: Settings | None = None
        self.store: Store | None = None
        self.api: FakeTwilioApi | None = None
        self.call_log: CallLog | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self._served: Future[None] | None = None

    def start(self) -> None:
        self._thread.start()
        ready: Future[None] = Future()
        self._served = asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop)
        ready.result(timeout=60)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._served is not None:
            self._served.result(timeout=30)
        self.run(_cancel_the_rest())  # shared helpers (the VAD batcher) end with the loop
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    # ------------------------------------------------------------ calls

    def options(self, **overrides: str) -> CallOptions:
        assert self.api is not None
        options = CallOptions(self.base_url, AUTH_TOKEN, account_sid=ACCOUNT_SID, **overrides)
        self.api.add_call(options.call_sid)
        return options

    async def held_call(self, options: CallOptions, release: threading.Event) -> str | None:
        """A caller who stays on (silent) until ``release`` or until the call is ended
        through Twilio REST: then, as Twilio does, the stream stops."""
        assert self.api is not None
        api, sid = self.api, options.call_sid
        plan = await dial(options)
        async with LiveCall(plan, options) as call:
            await call.wait_until(
                lambda: release.is_set() or api.calls.get(sid) == "completed", 120
            )
        return call.hangup_by

    def scenario(self, scenario: Scenario, options: CallOptions) -> Future[CallReport]:
        """Start ``scenario`` as a call (voices are made here, in the caller's thread)."""
        voices = prepare_voices(scenario, ROOT / "examples" / "scenarios")
        return self.submit(run_scenario(scenario, options, voices))

    # ------------------------------------------------------------ the server

    async def _serve(self, ready: Future[None]) -> None:
        try:
            with fake_twilio_api(ACCOUNT_SID, AUTH_TOKEN) as api:
                self.api = api
                settings = load_settings(
                    auth_token=AUTH_TOKEN,
                    account_sid=ACCOUNT_SID,
                    api_token=API_TOKEN,
                    stream_secret="d" * 32,
                    data_dir=self.data_dir,
                    twilio_api_base_url=api.base_url,
                )
                self.settings = settings
                store = Store.from_settings(settings)
                self.store = store
                call_log = CallLog(
                    store.writer, assistant="keypad-menu", recordings_dir=settings.recordings_path
                )
                runner = build_runner(
                    ASSISTANT,
                    {},
                    on_turn=call_log.on_turn,
                    on_end=call_log.on_end,
                )
                app = create_app(settings, call_log.wrap(runner), store=store, call_log=call_log)
                self.call_log = call_log
                self._stop = asyncio.Event()
                async with running_server(app) as base_url:
                    self.base_url = base_url
                    ready.set_result(None)
                    await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
