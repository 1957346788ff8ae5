"""The seed's stack end to end: a simulated Twilio call into the real server running
`examples/assistant-seed.yaml`, whose production Deepgram, OpenAI and ElevenLabs clients
talk to their protocol-faithful local fakes (issue 5's "done when")."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fakes.deepgram import FakeDeepgram
from fakes.elevenlabs import FakeElevenLabs
from fakes.openai_chat import FakeOpenAI
from fakes.script import Reply
from support.server import running_server

from callbridge.server.app import create_app
from callbridge.settings import load_settings
from callbridge.simulator.dialer import CallOptions
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import parse_scenario
from callbridge.voice_agent import build_runner

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "seed-stack-auth-token-0123456789"
ANSWER = (
    "Sure, I can help with your bill. ",
    "Your last invoice was forty two dollars, and it was paid on the third of the month. ",
    "Is there anything else about your account that I can check for you today?",
)
SCENARIO = """
name: seed-stack
steps:
  - expect_bot_speech: 3000
  - wait_for_silence: {ms: 700, timeout_ms: 20000}
  - say: "I need help with my bill please."
  - expect_bot_speech: 3000
  - interrupt: {after_bot_speech_ms: 1200, say: "Wait what was the amount again?"}
  - expect_clear: 1500
  - expect_bot_speech: 4000
  - hangup
"""


def _answer(request: Mapping[str, Any]) -> Reply:
    """The model's answer to the caller's last words (speculation may ask more than once)."""
    if "amount" in request["messages"][-1]["content"]:
        return Reply(text=("It was forty two dollars.",))
    return Reply(text=ANSWER)


async def test_a_call_through_deepgram_openai_and_elevenlabs(tmp_path: Path) -> None:
    # No commas: espeak pauses at one, long enough for the engine's early Finalize, and
    # the fake (which cannot hear) would end its scripted utterance there.
    transcripts = ["I need help with my bill please.", "Wait what was the amount again?"]
    async with (
        FakeDeepgram(transcripts, endpointing_frames=15) as deepgram,
        FakeOpenAI(_answer) as openai,
        FakeElevenLabs(ms_per_char=40) as elevenlabs,
    ):
        env = {
            "DEEPGRAM_API_KEY": deepgram.api_key,
            "DEEPGRAM_BASE_URL": deepgram.base_url,
            "OPENAI_API_KEY": "test-openai-key",
            "OPENAI_BASE_URL": openai.base_url,
            "ELEVENLABS_API_KEY": elevenlabs.api_key,
            "ELEVENLABS_BASE_URL": elevenlabs.base_url,
        }
        settings = load_settings(auth_token=TOKEN, stream_secret="d" * 32, data_dir=tmp_path)
        runner = build_runner(ROOT / "examples" / "assistant-seed.yaml", env)
        async with running_server(create_app(settings, runner)) as base_url:
            scenario = parse_scenario(SCENARIO)
            report = await run_scenario(
                scenario, CallOptions(base_url, TOKEN), prepare_voices(scenario, ROOT)
            )

    assert report.ok, report.failures
    assert report.underruns == 0
    # Deepgram heard the caller's μ-law, untranscoded, over one live socket.
    assert len(deepgram.sessions) == 1
    # OpenAI got the transcript (after, maybe, a held guess on the interim words, which
    # Deepgram's final then corrected), then — after the barge-in — only what the caller
    # heard.
    asked = [r["messages"] for r in openai.requests]
    first = next(m for m in asked if m[-1]["content"] == transcripts[0])
    second = asked[-1]
    assert first[0]["role"] == "system" and first[-1] == {
        "role": "user",
        "content": transcripts[0],
    }
    greeting, heard = [m["content"] for m in second if m["role"] == "assistant"]
    assert greeting == "Hi, this is Ada from Acme. How can I help?"
    assert heard.startswith("Sure, I can help with your bill.")
    assert "anything else" not in heard  # the caller never heard the end of the answer
    assert second[-1]["content"] == transcripts[1]
    # ElevenLabs spoke the greeting and the answers, a context per sentence, all on the
    # one socket the call opened at its start (the barge-in did not cost a reconnect).
    (tts_socket,) = elevenlabs.sessions
    assert tts_socket.multi and len(tts_socket.contexts_opened) >= 3
    (interrupted,) = [t for t in report.turns if t.barge_in]
    # Cleared while the caller was still talking (how fast: bench/bargein.py).
    assert interrupted.bargein_ms is not None and interrupted.end_s is not None
    assert interrupted.onset_s + interrupted.bargein_ms / 1000 < interrupted.end_s
