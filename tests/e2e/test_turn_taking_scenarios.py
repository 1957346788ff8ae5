"""The turn-taking scenarios of examples/scenarios (issue 16) against the seed stack: the
real server running `examples/assistant-seed.yaml`, whose Deepgram, OpenAI and ElevenLabs
clients talk to their wire-level fakes. The fake Deepgram streams interim words, as the
real one does with ``interim_results=true``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fakes.deepgram import FakeDeepgram
from fakes.elevenlabs import FakeElevenLabs
from fakes.openai_chat import FakeOpenAI
from fakes.script import Reply
from support.server import running_server

from callbridge.server.app import create_app
from callbridge.settings import load_settings
from callbridge.simulator.dialer import CallOptions
from callbridge.simulator.report import CallReport
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import load_scenario
from callbridge.voice_agent import build_runner

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "examples" / "scenarios"
TOKEN = "turn-taking-auth-token-012345678"
QUESTION = "How does the renewal of my plan work?"
EXPLANATION = (
    "Your plan renews on the first of every month, on the card you gave us. ",
    "The price stays the same for the whole first year of the plan. ",
    "After that it follows the list price, and we email you two weeks before any change. ",
    "You can cancel at any time from your account page, with no fee at all.",
)


async def _run(name: str, transcripts: Sequence[str], replies: Sequence[Reply],
               tmp_path: Path) -> tuple[CallReport, FakeOpenAI]:
    async with (
        FakeDeepgram(transcripts, endpointing_frames=15, interim_every_frames=5) as deepgram,
        FakeOpenAI(list(replies)) as openai,
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
        settings = load_settings(auth_token=TOKEN, stream_secret="t" * 32, data_dir=tmp_path)
        runner = build_runner(ROOT / "examples" / "assistant-seed.yaml", env)
        async with running_server(create_app(settings, runner)) as base_url:
            scenario = load_scenario(SCENARIOS / f"{name}.yaml")
            report = await run_scenario(
                scenario, CallOptions(base_url, TOKEN), prepare_voices(scenario, SCENARIOS)
            )
    return report, openai


async def test_two_uh_huhs_do_not_stop_the_bot_and_are_not_answered(tmp_path: Path) -> None:
    report, openai = await _run(
        "backchannel-uh-huh",
        [QUESTION, "uh-huh", "uh-huh"],
        [Reply(text=EXPLANATION), Reply(text=("That should not be said.",))],
        tmp_path,
    )
    assert report.ok, report.failures
    assert report.clears == 0
    assert len(openai.requests) == 1  # the backchannels were not answered


async def test_a_cough_mid_reply_does_not_stop_the_bot(tmp_path: Path) -> None:
    report, openai = await _run(
        "cough-mid-reply",
        [QUESTION, ""],  # the transcriber hears no words in the sound
        [Reply(text=EXPLANATION), Reply(text=("That should not be said.",))],
        tmp_path,
    )
    assert report.ok, report.failures
    assert report.clears == 0
    assert len(openai.requests) == 1


async def test_a_real_interruption_stops_the_bot_and_is_answered(tmp_path: Path) -> None:
    interruption = "No wait, what does it cost?"
    report, openai = await _run(
        "real-interruption",
        [QUESTION, interruption],
        [Reply(text=EXPLANATION), Reply(text=("It is nine dollars a month.",))],
        tmp_path,
    )
    assert report.ok, report.failures
    assert report.clears >= 1
    assert openai.requests[-1]["messages"][-1]["content"] == interruption


async def test_a_false_interruption_resumes_without_asking_the_model(tmp_path: Path) -> None:
    report, openai = await _run(
        "door-false-interruption",
        [QUESTION, ""],
        [Reply(text=EXPLANATION), Reply(text=("That should not be said.",))],
        tmp_path,
    )
    assert report.ok, report.failures
    assert report.clears == 1
    assert len(openai.requests) == 1  # the rest of the first answer, not a new one
