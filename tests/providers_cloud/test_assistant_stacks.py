"""The two stacks of issue 5 as assistant files: the seed's cloud stack and a self-hosted
one. They go through the real loader and registry, so a field the blocks do not accept,
or a key the stack needs, fails here rather than at start-up in production."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbridge.assistant import parse_assistant
from callbridge.errors import ConfigError
from callbridge.providers.registry import build_provider, spec_for

EXAMPLES = Path(__file__).parents[2] / "examples"
SEED = (EXAMPLES / "assistant-seed.yaml").read_text()
SELF_HOSTED = (EXAMPLES / "assistant-selfhosted.yaml").read_text()

SEED_ENV = {"DEEPGRAM_API_KEY": "dg", "OPENAI_API_KEY": "sk", "ELEVENLABS_API_KEY": "xi"}


def build_stack(text: str, env: dict[str, str]) -> dict[str, object]:
    config = parse_assistant(text)
    built: dict[str, object] = {}
    for kind, raw in (("stt", config.transcriber), ("llm", config.model), ("tts", config.voice)):
        block = spec_for(kind, raw["provider"]).config.model_validate(raw)  # type: ignore[arg-type]
        built[kind] = build_provider(kind, block, env)  # type: ignore[arg-type]
    return built


def test_seed_stack_builds() -> None:
    built = build_stack(SEED, SEED_ENV)
    assert [p.name for p in built.values()] == ["deepgram", "openai", "11labs"]  # type: ignore[attr-defined]
    llm = built["llm"]
    assert llm.system_prompt.startswith("You are Ada")  # type: ignore[attr-defined]
    assert [s.name for s in llm.toolset.specs] == ["end_call", "transfer_call", "check_bill"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("missing", sorted(SEED_ENV))
def test_seed_stack_names_each_missing_key(missing: str) -> None:
    env = {k: v for k, v in SEED_ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        build_stack(SEED, env)


def test_self_hosted_stack_builds_without_any_key() -> None:
    built = build_stack(SELF_HOSTED, {})
    assert [p.name for p in built.values()] == ["openai-compatible"] * 3  # type: ignore[attr-defined]


def test_unknown_field_in_a_block_is_reported_with_its_line() -> None:
    with pytest.raises(ConfigError, match=r"<assistant>:\d+: voice.voiceid"):
        parse_assistant(SEED.replace("voiceId", "voiceid"))
