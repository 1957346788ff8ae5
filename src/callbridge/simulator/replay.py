"""``callbridge replay``: a stored call's caller, played again against another assistant.

The caller's leg of the call's stereo recording is played back frame for frame, on the
recorded timeline (the simulator's real-time send loop: frame k leaves k × 20 ms after
the stream starts), with the recorded key presses at their moments. The caller is a
recording, so it does not wait for the new bot: if the new bot answers later than the
old one, the caller's next words may now fall on its reply, as they would have on the
real line. That is the comparison the replay is for.

By default the other assistant runs in this process, on a server on 127.0.0.1 whose
record goes to a temporary SQLite file (the replay never lands in the real call record);
``--url`` sends the call to a running server instead, read back through ``/api`` when
an API token is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions, CallRefused, dial
from callbridge.simulator.replay_report import ReplayReport
from callbridge.simulator.replay_source import (
    CallSide,
    ReplayError,
    StoredCall,
    side_from_api,
    side_from_detail,
)
from callbridge.simulator.replay_track import (
    DEFAULT_GAP_MS,
    Press,
    ReplayPlan,
    Speak,
    caller_turns,
    plan_replay,
    split_stereo,
)
from callbridge.simulator.report import CallReport
from callbridge.store.database import Database
from callbridge.store.repository import get_call

__all__ = ["RemoteServer", "ReplaySettings", "local_server", "replay_call"]

RECORD_WAIT_S = 10.0
"""How long the record of the replayed call may take to show its end (async writer)."""


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    speed: float = 1.0
    gap_ms: int = DEFAULT_GAP_MS
    tolerance_ms: float = 150.0


@dataclass(frozen=True, slots=True)
class RemoteServer:
    """A running server (``--url``): where to call, how to sign, how to read the record."""

    base_url: str
    auth_token: str
    api_token: str | None = None
    public_url: str | None = None
    account_sid: str | None = None


@dataclass(frozen=True, slots=True)
class _Target:
    options: CallOptions
    database: Database | None
    remote: RemoteServer | None


async def replay_call(
    stored: StoredCall,
    assistant_path: Path | None,
    *,
    settings: ReplaySettings = ReplaySettings(),
    remote: RemoteServer | None = None,
    env: Mapping[str, str] | None = None,
) -> ReplayReport:
    """Replay ``stored``; against ``assistant_path`` served here, or against ``remote``."""
    plan = plan_replay(stored.track, stored.presses, speed=settings.speed, gap_ms=settings.gap_ms)
    stored.side.caller_turns = caller_turns(stored.track, stored.presses, gap_ms=settings.gap_ms)
    if remote is not None:
        options = CallOptions(
            remote.base_url,
            remote.auth_token,
            public_url=remote.public_url,
            **({"account_sid": remote.account_sid} if remote.account_sid else {}),
        )
        side, report = await _replay_to(_Target(options, None, remote), plan, settings)
    else:
        if assistant_path is None:
            raise ReplayError("give --assistant FILE (or --url of a running server)")
        async with local_server(assistant_path, env) as (base_url, token, database):
            target = _Target(CallOptions(base_url, token), database, None)
            side, report = await _replay_to(target, plan, settings)
    return ReplayReport(
        original=stored.side,
        replay=side,
        simulator=report,
        speed=settings.speed,
        removed_ms=plan.removed_ms,
        tolerance_ms=settings.tolerance_ms,
    )


@asynccontextmanager
async def local_server(
    assistant_path: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[str, str, Database]]:
    """The assistant on a server on 127.0.0.1 in this loop, its record in a temp dir.

    Yields ``(base_url, auth_token, database)``. Built as ``callbridge serve`` builds
    it (``serving_app``'s parts), with a throwaway auth token, no Twilio REST (hang-up
    closes the socket) and no recordings (the simulator records what the caller heard).
    """
    from callbridge.assistant import load_assistant
    from callbridge.server.app import create_app, uvicorn_config
    from callbridge.server.call_log import CallLog
    from callbridge.settings import load_settings
    from callbridge.store import Store
    from callbridge.telemetry.metrics import Metrics
    from callbridge.voice_agent import build_runner

    config = load_assistant(assistant_path)  # a bad file fails here, before any call
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="callbridge-replay-") as tmp:
        settings = load_settings(
            auth_token=token,
            stream_secret=secrets.token_hex(16),
            data_dir=Path(tmp),
            database_url=f"sqlite:///{Path(tmp) / 'replay.db'}",
            account_sid="",
            api_token=None,
            public_url=None,
            twilio_api_base_url=None,
            max_calls=0,
            insecure_skip_signature=False,
        )
        metrics = Metrics()
        store = Store.from_settings(settings)
        call_log = CallLog(store.writer, assistant=config.name, metrics=metrics)
        # The call log hears each call's events through the app's bus (``create_app``).
        runner = build_runner(assistant_path, env, on_turn=call_log.on_turn,
                              on_end=call_log.on_end)
        app = create_app(settings, call_log.wrap(runner), store=store, metrics=metrics,
                         call_log=call_log)
        server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0, log_level="warning"))
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    task.result()
                    raise ReplayError("the replay server stopped before it started")
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            yield f"http://127.0.0.1:{port}", token, store.database
        finally:
            server.should_exit = True
            await asyncio.wait({task}, timeout=10.0)
            if not task.done():
                server.force_exit = True
                task.cancel()
                await asyncio.wait({task})


# ------------------------------------------------------------------ private


async def _replay_to(
    target: _Target, plan: ReplayPlan, settings: ReplaySettings
) -> tuple[CallSide, CallReport]:
    options = target.options
    try:
        twiml = await dial(options)
    except (CallRefused, httpx.HTTPError) as exc:
        raise ReplayError(f"the replay server refused the call: {exc}") from exc
    if twiml.stream_url is None:
        said = " ".join(twiml.says) or "no <Stream>"
        raise ReplayError(f"the replay server's TwiML connected no stream: {said}")
    call = LiveCall(twiml, options, record=True)
    async with call:
        workers = [
            asyncio.create_task(_speak(call, plan)),
            asyncio.create_task(_press(call, plan)),
        ]
        try:
            await call.wait_until(lambda: call.frames_sent >= plan.end_frame, None)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    report = call.report("replay")
    side = await _record(target, options.call_sid)
    if call.recorder is not None:
        # When each key really went out, on the recorder's timeline (zero: the start).
        pressed = [
            (round((t.onset_s - call.t0_s) * 1000), t.label)
            for t in call.tracker.turns
            if t.kind == "dtmf"
        ]
        side.caller_turns = caller_turns(
            split_stereo(call.recorder.stereo_pcm16()), pressed, gap_ms=settings.gap_ms
        )
    return side, report


async def _speak(call: LiveCall, plan: ReplayPlan) -> None:
    for action in plan.actions:
        if isinstance(action, Speak):
            await _reach(call, action.frame)
            if call.ended:
                return
            await call.say(action.utterance)


async def _press(call: LiveCall, plan: ReplayPlan) -> None:
    for action in plan.actions:
        if isinstance(action, Press):
            await _reach(call, action.frame)
            if call.ended:
                return
            await call.dtmf(action.digit)


async def _reach(call: LiveCall, frame: int) -> None:
    """Until ``frame`` frames were sent: the next one sent is frame ``frame``."""
    await call.wait_until(lambda: call.frames_sent >= frame, None)


async def _record(target: _Target, sid: str) -> CallSide:
    """The replayed call's record once it shows the call ended (the writer is async)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_WAIT_S
    if target.database is not None:
        while True:
            detail = await get_call(target.database, sid)
            if detail is not None and (detail.call.ended_at is not None or loop.time() > deadline):
                return side_from_detail(detail, "replay")
            if loop.time() > deadline:
                raise ReplayError(f"the replay server kept no record of call {sid}")
            await asyncio.sleep(0.05)
    remote = target.remote
    assert remote is not None
    empty = CallSide("replay", sid, "", None, None, turns=[], events=None)
    if not remote.api_token:
        return empty  # turns and events need the records API; the audio is still measured
    headers = {"Authorization": f"Bearer {remote.api_token}"}
    async with httpx.AsyncClient(
        base_url=remote.base_url, headers=headers, trust_env=False
    ) as http:
        while True:
            answer = await http.get(f"/api/calls/{sid}")
            if answer.status_code not in (200, 404):
                raise ReplayError(
                    f"{remote.base_url}/api/calls/{sid} answered {answer.status_code}: "
                    "check --api-token"
                )
            body = answer.json() if answer.status_code == 200 else None
            if body is not None and (body["call"]["endedAt"] or loop.time() > deadline):
                return side_from_api(body, "replay")
            if loop.time() > deadline:
                return empty
            await asyncio.sleep(0.1)
