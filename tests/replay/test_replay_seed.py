"""Replay on the seed stack: the server runs `examples/assistant-seed.yaml` (Silero, and the
production Deepgram, OpenAI and ElevenLabs clients) against the wire-level fakes of
tests/fakes, for the recorded call and for its replays alike. The fake Deepgram gives
each connection the same script, so a replayed caller is "heard" as the original was."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from fakes.deepgram import FakeDeepgram
from fakes.elevenlabs import FakeElevenLabs
from fakes.openai_chat import FakeOpenAI
from fakes.script import Reply

from callbridge.simulator.dialer import CallOptions
from callbridge.simulator.replay import replay_call
from callbridge.simulator.replay_source import StoredCall, load_stored_call
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import parse_scenario
from replay.test_replay_e2e import AUTH_TOKEN, serving

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is my balance please?"
ANSWER = "Your balance is forty two dollars."
SCENARIO = f"""
name: seed-recorded
steps:
  - expect_bot_speech: 5000
  - wait_for_silence: {{ms: 700, timeout_ms: 15000}}
  - say: {QUESTION}
  - wait_for_bot_speech: 5000
  - wait_for_silence: {{ms: 1000, timeout_ms: 15000}}
  - hangup
"""


def seed_assistant(tmp: Path, name: str, *, endpointing_ms: int) -> Path:
    config: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "assistant-seed.yaml").read_text())
    config["name"] = name
    config["recordingEnabled"] = True
    # The full silence ends the turn, so endpointingMs is what the caller waits for.
    config["turnTaking"] = {**config["turnTaking"], "endpointingMs": endpointing_ms,
                            "endOfTurn": "off"}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Seed:
    def __init__(self, stored: StoredCall, tmp: Path, env: dict[str, str]) -> None:
        self.stored, self.tmp, self.env = stored, tmp, env


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def seed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Seed]:
    tmp = tmp_path_factory.mktemp("seed")
    async with (
        FakeDeepgram([QUESTION], endpointing_frames=15, interim_every_frames=5) as deepgram,
        FakeOpenAI([], default=Reply(text=(ANSWER,))) as openai,
        FakeElevenLabs(ms_per_char=30) as elevenlabs,
    ):
        env = {
            "DEEPGRAM_API_KEY": deepgram.api_key,
            "DEEPGRAM_BASE_URL": deepgram.base_url,
            "OPENAI_API_KEY": "test-openai-key",
            "OPENAI_BASE_URL": openai.base_url,
            "ELEVENLABS_API_KEY": elevenlabs.api_key,
            "ELEVENLABS_BASE_URL": elevenlabs.base_url,
        }
        scenario = parse_scenario(SCENARIO)
        voices = await asyncio.to_thread(prepare_voices, scenario, tmp)
        original = seed_assistant(tmp, "seed-500", endpointing_ms=500)
        async with serving(original, tmp / "data", env=env) as (base_url, store):
            options = CallOptions(base_url, AUTH_TOKEN)
            report = await run_scenario(scenario, options, voices)
            assert report.ok, report.failures
            stored = None
            for _ in range(200):
                stored = await load_stored_call(store.database, options.call_sid)
                if stored.side.duration_s is not None and len(stored.side.turns) >= 3:
                    break
                await asyncio.sleep(0.025)
            assert stored is not None
        yield Seed(stored, tmp, env)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_seed_call_replays_with_the_same_turns(seed: Seed) -> None:
    same = seed_assistant(seed.tmp, "seed-500", endpointing_ms=500)
    report = await replay_call(seed.stored, same, env=seed.env)
    texts = [(t.role, t.text) for t in report.replay.turns]
    assert texts[1:] == [("user", QUESTION), ("assistant", ANSWER)]
    assert report.same, report.differences


@pytest.mark.asyncio(loop_scope="module")
async def test_a_longer_endpointing_on_the_seed_stack_is_reported(seed: Seed) -> None:
    slower = seed_assistant(seed.tmp, "seed-800", endpointing_ms=800)
    report = await replay_call(seed.stored, slower, env=seed.env)
    assert report.same_turns, report.differences
    (row,) = report.caller_rows
    assert row.delta_ms is not None and 200 <= row.delta_ms <= 400
    assert any(line.startswith("caller turn 1: latency") for line in report.differences)
