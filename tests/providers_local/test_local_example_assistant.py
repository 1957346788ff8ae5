"""examples/assistant.yaml (what `make serve` runs) loads, builds and behaves as a menu."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from callbridge.assistant import build_assistant, load_assistant, parse_assistant
from callbridge.errors import ConfigError
from callbridge.providers.base import Message, TextDelta, ToolCall
from callbridge.providers.llm.scripted import ScriptedAgent
from callbridge.providers.stt.none import NoSpeechToText
from callbridge.providers.tts.espeak import EspeakTts
from callbridge.providers.vad.silero_batch import BatchedSileroModel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "assistant.yaml"


def test_example_loads_and_builds_with_no_keys() -> None:
    config = load_assistant(EXAMPLE)
    built = build_assistant(config, {k: v for k, v in os.environ.items() if "KEY" not in k})
    assert isinstance(built.vad, BatchedSileroModel)  # the metronome batches it
    assert isinstance(built.stt, NoSpeechToText)
    assert isinstance(built.llm, ScriptedAgent)
    assert isinstance(built.tts, EspeakTts)
    assert config.first_message and "press 1" in config.first_message.lower()
    assert config.end_call_message


@pytest.mark.parametrize(
    ("digit", "tool"), [("1", None), ("2", None), ("0", "end_call"), ("9", "transfer_call")]
)
async def test_example_menu_digits(digit: str, tool: str | None) -> None:
    built = build_assistant(load_assistant(EXAMPLE), {})
    events = [e async for e in built.llm.stream([Message("user", "", dtmf=digit)], [])]
    assert "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [e.name for e in events if isinstance(e, ToolCall)]
    assert calls == ([tool] if tool else [])


async def test_example_steers_a_speaking_caller_to_the_keypad() -> None:
    built = build_assistant(load_assistant(EXAMPLE), {})
    events = [e async for e in built.llm.stream([Message("user", "")], [])]
    assert "keypad" in "".join(e.text for e in events if isinstance(e, TextDelta))


def test_a_broken_intent_is_reported_with_its_line() -> None:
    text = EXAMPLE.read_text().replace("      action: transfer\n", "      action: teleport\n")
    with pytest.raises(ConfigError) as caught:
        parse_assistant(text, source="assistant.yaml")
    line = text.splitlines().index("      action: teleport") + 1
    assert f"assistant.yaml:{line}: model.intents.3.action" in str(caught.value)
