"""The two stacks of issue 5 as assistant files: the seed's cloud stack and a self-hosted
one. They go through the real loader and registry, so a field the blocks do not accept,
or a key the stack needs, fails here rather than at start-up in production."""

from __future__ import annotations

import pytest

from callbridge.assistant import parse_assistant
from callbridge.errors import ConfigError
from callbridge.providers.registry import build_provider, spec_for

SEED = """
name: seed-support
firstMessage: Hi, this is Ada from Acme. How can I help?
endCallMessage: Thanks for calling, goodbye.
transcriber: {provider: deepgram, model: nova-2, language: en-US, endpointing: 300}
model:
  provider: openai
  model: gpt-4o
  temperature: 0.4
  messages:
    - {role: system, content: "You are Ada, a concise phone agent for Acme."}
  transferNumber: "+15555550100"
  tools:
    - name: check_bill
      description: Look up the caller's current balance.
      url: https://tools.example.com/bill
      parameters:
        type: object
        properties: {account: {type: string}}
        required: [account]
voice: {provider: 11labs, voiceId: 21m00Tcm4TlvDq8ikWAM, model: eleven_flash_v2_5,
        stability: 0.5, similarityBoost: 0.75}
"""

SELF_HOSTED = """
name: self-hosted
transcriber: {provider: openai-compatible, baseUrl: "http://stt.internal:8000/v1",
              model: Systran/faster-whisper-small}
model: {provider: openai-compatible, baseUrl: "http://llm.internal:11434/v1",
        model: "llama3.1:8b", systemPrompt: You are a helpful phone agent.}
voice: {provider: openai-compatible, baseUrl: "http://tts.internal:8880/v1", model: kokoro,
        voiceId: af_bella}
"""

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
