"""``engine: vapi`` in the assistant file: what is required, and errors with their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbridge.assistant import load_assistant, parse_assistant
from callbridge.errors import ConfigError
from callbridge.voice_agent import build_runner

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "assistant-vapi.yaml"


def test_the_example_needs_no_model_voice_or_transcriber() -> None:
    config = load_assistant(EXAMPLE)
    assert config.engine == "vapi" and config.model == {}
    assert config.vapi is not None and config.vapi["assistantId"]


def test_the_key_is_checked_at_start_up() -> None:
    with pytest.raises(ConfigError, match="VAPI_API_KEY"):
        build_runner(EXAMPLE, {})
    assert callable(build_runner(EXAMPLE, {"VAPI_API_KEY": "k"}))


def test_a_vapi_engine_without_a_vapi_block_names_the_engine_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_assistant("name: x\nengine: vapi\n", source="a.yaml")
    assert str(caught.value) == "a.yaml:2: vapi: a vapi block is required with engine: vapi"


def test_a_bad_vapi_block_is_reported_with_its_line() -> None:
    text = "name: x\nengine: vapi\nvapi:\n  assistantId: a\n  asistant: {}\n"
    with pytest.raises(ConfigError) as caught:
        parse_assistant(text, source="a.yaml")
    assert "a.yaml:5: vapi.asistant: Extra inputs are not permitted" in str(caught.value)
    with pytest.raises(ConfigError, match="exactly one of assistantId or assistant"):
        parse_assistant("engine: vapi\nvapi: {}\n", source="a.yaml")


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"a\.yaml:1: engine"):
        parse_assistant("engine: livekit\nmodel: {provider: scripted}\n", source="a.yaml")


def test_the_pipeline_still_requires_a_model() -> None:
    with pytest.raises(ConfigError, match=r"model\.provider: a provider name is required"):
        parse_assistant("name: x\n", source="a.yaml")
