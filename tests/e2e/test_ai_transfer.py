"""AI-driven transfer end to end (issue 10, item 3): the model calls the built-in
``transfer_call`` through the production OpenAI / Anthropic clients talking to their
wire-level fakes, the engine emits ``Transfer``, and the real server replaces the call's
TwiML with ``<Dial>`` through Twilio REST (the fake Calls resource).

The tool is offered without parameters, so the number dialled must be the assistant's
``transferNumber`` — and a number the model invents in its arguments is never dialled.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from fakes.anthropic_messages import FakeAnthropic
from fakes.openai_chat import FakeOpenAI
from fakes.script import Reply, ScriptedToolCall
from support.server import running_server
from support.twilio_api import FakeTwilioApi, fake_twilio_api

from callbridge.server.app import create_app
from callbridge.settings import load_settings
from callbridge.simulator.dialer import CallOptions
from callbridge.simulator.runner import run_scenario
from callbridge.simulator.scenario import parse_scenario
from callbridge.voice_agent import build_runner

TOKEN = "transfer-auth-token-0123456789abc"
ACCOUNT_SID = "AC" + "7" * 32
DESK = "+15555550100"
SCENARIO = """
name: ai-transfer
timeout_s: 30
steps:
  - dtmf: "0"
  - expect_bot_speech: 8000
  - expect_hangup: 15000
"""


def _assistant(tmp_path: Path, vendor: str, base_url: str) -> Path:
    model = (
        f"model: {{provider: openai, model: gpt-4o, baseUrl: '{base_url}', "
        f"transferNumber: '{DESK}', systemPrompt: Transfer callers who press 0.}}"
        if vendor == "openai"
        else f"model: {{provider: anthropic, model: claude-haiku-4-5, baseUrl: '{base_url}', "
        f"transferNumber: '{DESK}', systemPrompt: Transfer callers who press 0.}}"
    )
    path = tmp_path / f"assistant-{vendor}.yaml"
    path.write_text(
        "name: transfer-desk\n"
        "vad: {provider: webrtc}\n"
        "transcriber: {provider: none}\n"
        f"{model}\n"
        "voice: {provider: espeak}\n"
    )
    return path


def _fake(vendor: str, arguments: dict[str, Any]) -> AbstractAsyncContextManager[Any]:
    answer = Reply(
        text=("Let me put you through to our desk.",),
        tool_calls=(ScriptedToolCall("transfer_call", arguments),),
    )
    return FakeOpenAI([answer]) if vendor == "openai" else FakeAnthropic([answer])


@pytest.fixture
def twilio_api() -> Iterator[FakeTwilioApi]:
    with fake_twilio_api(ACCOUNT_SID, TOKEN) as api:
        yield api


async def _call(
    tmp_path: Path, twilio_api: FakeTwilioApi, vendor: str, arguments: dict[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """One call in which the caller presses 0 and the model transfers; the model
    requests the fake saw, and the CallSid."""
    async with _fake(vendor, arguments) as llm:
        env = {
            "OPENAI_API_KEY": "test-openai-key",
            "ANTHROPIC_API_KEY": "test-anthropic-key",
        }
        settings = load_settings(
            auth_token=TOKEN,
            account_sid=ACCOUNT_SID,
            stream_secret="t" * 32,
            data_dir=tmp_path,
            twilio_api_base_url=twilio_api.base_url,
        )
        runner = build_runner(_assistant(tmp_path, vendor, llm.base_url), env)
        async with running_server(create_app(settings, runner)) as base_url:
            options = CallOptions(base_url, TOKEN, account_sid=ACCOUNT_SID)
            twilio_api.add_call(options.call_sid)
            report = await run_scenario(parse_scenario(SCENARIO), options, {})
            assert report.ok, report.failures
        return llm.requests, options.call_sid


def _dialled(api: FakeTwilioApi, call_sid: str) -> list[str]:
    """The numbers the call was sent to by a TwiML ``<Dial>`` update."""
    numbers = []
    for request in api.requests:
        if call_sid in request.path and "Twiml" in request.form:
            dial = ET.fromstring(request.form["Twiml"][0]).find("Dial")
            assert dial is not None
            numbers.append((dial.text or "").strip())
    return numbers


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_the_model_transfers_the_caller_to_the_configured_number(
    tmp_path: Path, twilio_api: FakeTwilioApi, vendor: str
) -> None:
    requests, call_sid = await _call(tmp_path, twilio_api, vendor, {})
    # The model was offered transfer_call (no parameters) and asked for it.
    (request,) = requests
    offered = [t.get("function", t).get("name") for t in request["tools"]]
    assert "transfer_call" in offered
    assert _dialled(twilio_api, call_sid) == [DESK]
    assert twilio_api.calls[call_sid] == "in-progress"  # handed on, not hung up
    assert not any(r.form.get("Status") == ["completed"] for r in twilio_api.requests)


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_a_number_the_model_makes_up_is_never_dialled(
    tmp_path: Path, twilio_api: FakeTwilioApi, vendor: str
) -> None:
    _, call_sid = await _call(tmp_path, twilio_api, vendor, {"to": "+19005550199"})
    assert _dialled(twilio_api, call_sid) == [DESK]
