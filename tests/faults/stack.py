"""The seed stack under fault injection: the real server running
``examples/assistant-seed.yaml`` (production Deepgram, OpenAI and ElevenLabs clients), its
vendors' wire-level fakes each behind a ``ChaosProxy``, Twilio's REST API faked on
127.0.0.1, and the call record in SQLite, read back through ``/api``.

    async with seed_stack(tmp_path, transcripts=[...], replies=[...]) as stack:
        outcome = await stack.call(SCENARIO, during=...)

The assistant file is the seed's with a ``faults`` block of short retry delays, so one
fault costs a test a fraction of a second instead of the 7 s of the real policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from fakes.deepgram import FakeDeepgram
from fakes.elevenlabs import FakeElevenLabs
from fakes.openai_chat import FakeOpenAI
from fakes.script import Failure, Reply
from support.server import running_server
from support.twilio_api import FakeTwilioApi, fake_twilio_api

from callbridge.server.app import create_app
from callbridge.server.call_log import CallLog, Providers
from callbridge.settings import load_settings
from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions
from callbridge.simulator.recording import Recorder
from callbridge.simulator.report import CallReport
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import parse_scenario
from callbridge.store import Store
from callbridge.telemetry.metrics import Metrics
from callbridge.voice_agent import build_runner
from faults.chaos import ChaosProxy, Plan
from faults.hearing import Span, heard

__all__ = ["FAST_FAULTS", "Outcome", "Stack", "seed_stack"]

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "assistant-seed.yaml"
AUTH_TOKEN = "faults-auth-token-0123456789abcd"
API_TOKEN = "faults-api-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "f" * 32

FAST_FAULTS: dict[str, Any] = {
    "retryDelaysS": [0.05, 0.1, 0.2],
    "holdAfterS": 1.5,
}
"""The seed's policy shape (three retries), with delays short enough for a test."""


@dataclass
class Outcome:
    """One call as the caller, the line and the record saw it."""

    report: CallReport
    heard: list[Span]
    rest_status: str | None  # the call's status at the Twilio REST fake
    call: dict[str, Any]  # the record: /api/calls/{sid}
    unhandled: list[logging.LogRecord]

    @property
    def outcome(self) -> str | None:
        return self.call["call"]["outcome"]  # type: ignore[no-any-return]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.call["events"] if e["kind"] == kind]

    def turns(self, role: str = "assistant") -> list[dict[str, Any]]:
        return [t for t in self.call["turns"] if t["role"] == role]

    def kinds_heard(self) -> list[str]:
        return [span.kind for span in self.heard]


@dataclass
class Stack:
    base_url: str
    deepgram: FakeDeepgram
    openai: FakeOpenAI
    elevenlabs: FakeElevenLabs
    stt: ChaosProxy
    llm: ChaosProxy
    tts: ChaosProxy
    twilio: FakeTwilioApi
    client: httpx.AsyncClient
    log: _Unhandled
    tmp_path: Path
    metrics: Metrics
    voices: dict[str, Any] = field(default_factory=dict)

    def errors(self, kind: str) -> float:
        """``callbridge_errors_total{kind}`` as /metrics reports it."""
        value = self.metrics.registry.get_sample_value(
            "callbridge_errors_total", {"kind": kind})
        return value or 0.0

    async def prepare(self, scenario_text: str) -> None:
        """Synthesise the caller's lines (espeak blocks) before any call needs them."""
        if scenario_text not in self.voices:
            scenario = parse_scenario(scenario_text)
            self.voices[scenario_text] = await asyncio.to_thread(prepare_voices, scenario, ROOT)

    async def call(
        self,
        scenario_text: str,
        *,
        during: Callable[[LiveCall], Awaitable[None]] | None = None,
    ) -> Outcome:
        """Place one call; ``during`` runs beside the scenario (to time a fault)."""
        scenario = parse_scenario(scenario_text)
        key = scenario_text
        await self.prepare(scenario_text)
        options = CallOptions(self.base_url, AUTH_TOKEN, account_sid=ACCOUNT_SID)
        self.twilio.add_call(options.call_sid)
        live: list[LiveCall] = []
        side: list[asyncio.Task[None]] = []

        def started(call: LiveCall) -> None:
            live.append(call)
            if during is not None:
                side.append(asyncio.create_task(during(call)))

        recording = self.tmp_path / f"{options.call_sid}.wav"
        mark = len(self.log.records)
        report = await run_scenario(
            scenario, options, self.voices[key], record_path=recording, on_call=started
        )
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        recorder = live[0].recorder if live else None
        recording.unlink(missing_ok=True)  # the recorder in memory is what is checked
        record = await self._record(options.call_sid)
        return Outcome(
            report=report,
            heard=heard(recorder) if isinstance(recorder, Recorder) else [],
            rest_status=self.twilio.calls.get(options.call_sid),
            call=record,
            unhandled=self.log.records[mark:],
        )

    async def _record(self, sid: str) -> dict[str, Any]:
        """The call's record once the store has it ended (the writer is asynchronous)."""
        body: dict[str, Any] = {}
        for _ in range(200):
            answer = await self.client.get(f"/api/calls/{sid}")
            if answer.status_code == 200:
                body = answer.json()
                if body["call"]["endedAt"] is not None:
                    return body
            await asyncio.sleep(0.025)
        raise AssertionError(f"the record of {sid} never ended: {body}")


class _Unhandled(logging.Handler):
    """Collects what would be an unhandled exception: any record with a traceback, the
    runner's own failure, and asyncio's 'exception was never retrieved'."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if (record.exc_info or record.name == "asyncio"
                or "runner_failed" in message or "never retrieved" in message):
            self.records.append(record)


def _assistant_file(tmp_path: Path, faults: Mapping[str, Any],
                    overrides: Mapping[str, Any]) -> Path:
    config = yaml.safe_load(SEED.read_text())
    config["faults"] = dict(faults)
    # Vendor timeouts short enough that a stall is a test of a second, not of ten.
    config["model"]["timeoutS"] = 1.0
    config["voice"]["readTimeoutS"] = 1.0
    for block, values in overrides.items():
        if isinstance(values, Mapping) and isinstance(config.get(block), dict):
            config[block].update(values)
        else:
            config[block] = values
    path = tmp_path / "assistant-faults.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@asynccontextmanager
async def seed_stack(
    tmp_path: Path,
    *,
    transcripts: Sequence[str],
    replies: Sequence[Reply | Failure] = (),
    default_reply: Reply | None = None,
    stt_plans: Sequence[Plan] = (),
    llm_plans: Sequence[Plan] = (),
    tts_plans: Sequence[Plan] = (),
    faults: Mapping[str, Any] = FAST_FAULTS,
    assistant: Mapping[str, Any] | None = None,
    deepgram: Mapping[str, Any] | None = None,
    elevenlabs: Mapping[str, Any] | None = None,
    chaos: Mapping[str, Mapping[str, Any]] | None = None,
) -> AsyncIterator[Stack]:
    """``chaos``: extra ``ChaosProxy`` fields (``choose``, ``default``) by vendor kind
    (``"stt"``, ``"llm"``, ``"tts"``)."""
    unhandled = _Unhandled()
    logging.getLogger().addHandler(unhandled)
    chaos = dict(chaos or {})
    # Interims on a beat, holding every word once a pause began, as Deepgram's do: the
    # engine speculates on them, so a fake interim of half the words would make every
    # turn ask the model twice (a guess, then the final's words).
    dg_options: dict[str, Any] = {"endpointing_frames": 15, "interim_every_frames": 5,
                                  **(deepgram or {})}
    el_options: dict[str, Any] = {"ms_per_char": 30, **(elevenlabs or {})}
    try:
        async with (
            FakeDeepgram(transcripts, **dg_options) as dg,
            FakeOpenAI(list(replies), **({"default": default_reply} if default_reply else {})
                       ) as oa,
            FakeElevenLabs(**el_options) as el,
            ChaosProxy.before(dg.base_url, stt_plans, **chaos.get("stt", {})) as stt,
            ChaosProxy.before(
                # The client warms its connection (GET /v1/models): plans are for chats.
                oa.base_url, llm_plans, **{"spare_paths": ("/v1/models",), **chaos.get("llm", {})}
            ) as llm,
            ChaosProxy.before(el.base_url, tts_plans, **chaos.get("tts", {})) as tts,
        ):
            env = {
                "DEEPGRAM_API_KEY": dg.api_key,
                "DEEPGRAM_BASE_URL": stt.url(dg.base_url),
                "OPENAI_API_KEY": "test-openai-key",
                "OPENAI_BASE_URL": llm.url(oa.base_url),
                "ELEVENLABS_API_KEY": el.api_key,
                "ELEVENLABS_BASE_URL": tts.url(el.base_url),
            }
            path = _assistant_file(tmp_path, faults, assistant or {})
            with fake_twilio_api(ACCOUNT_SID, AUTH_TOKEN) as twilio:
                settings = load_settings(
                    auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, api_token=API_TOKEN,
                    stream_secret="s" * 32, data_dir=tmp_path / "data",
                    twilio_api_base_url=twilio.base_url,
                )
                metrics = Metrics()
                store = Store.from_settings(settings)
                call_log = CallLog(store.writer, assistant="seed-support", metrics=metrics,
                                   providers=Providers(stt="deepgram", llm="openai",
                                                       tts="11labs"))
                runner = build_runner(path, env, on_turn=call_log.on_turn,
                                      on_end=call_log.on_end)
                app = create_app(settings, call_log.wrap(runner), store=store,
                                 metrics=metrics, call_log=call_log)
                async with running_server(app) as base_url:
                    client = httpx.AsyncClient(
                        base_url=base_url, trust_env=False,
                        headers={"Authorization": f"Bearer {API_TOKEN}"},
                    )
                    try:
                        yield Stack(base_url, dg, oa, el, stt, llm, tts, twilio, client,
                                    unhandled, tmp_path, metrics)
                    finally:
                        with contextlib.suppress(Exception):
                            await client.aclose()
            # Leftovers of this stack are collected while its loop runs, so what they
            # log is logged here, not in whichever test the collector visits next.
            gc.collect()
            await asyncio.sleep(0)
    finally:
        logging.getLogger().removeHandler(unhandled)
