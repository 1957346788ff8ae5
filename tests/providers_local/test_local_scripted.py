"""The scripted agent: which reply each kind of caller turn gets, and its config errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from callbridge.providers.base import LlmEvent, Message, TextDelta, ToolCall, ToolSpec
from callbridge.providers.llm.scripted import ScriptedAgent, ScriptedBlock
from callbridge.providers.registry import build_provider

MENU: dict[str, Any] = {
    "provider": "scripted",
    "intents": [
        {
            "name": "billing",
            "dtmf": 1,
            "keywords": ["billing", "invoice"],
            "reply": "Billing. Your invoice is emailed monthly.",
        },
        {"name": "support", "dtmf": "2", "keywords": ["support"], "reply": "Support here."},
        {"name": "bye", "dtmf": "0", "keywords": ["hang up"], "reply": "Bye.", "action": "hangup"},
        {
            "name": "person",
            "dtmf": "9",
            "keywords": ["agent"],
            "reply": "Transferring you now.",
            "action": "transfer",
            "transferTo": "+15555550100",
        },
    ],
    "fallback": "Sorry, say that again?",
    "noSpeechReply": "Please use your keypad.",
    "systemPrompt": "ignored",
}
TOOLS = [ToolSpec("end_call", "hang up"), ToolSpec("transfer_call", "transfer")]


@pytest.fixture
def agent() -> ScriptedAgent:
    built = build_provider("llm", ScriptedBlock.model_validate(MENU), {})
    assert isinstance(built, ScriptedAgent)
    return built


async def _reply(agent: ScriptedAgent, *messages: Message) -> tuple[str, list[LlmEvent]]:
    events = [e async for e in agent.stream(list(messages), TOOLS)]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return text, events


def _user(content: str, dtmf: str | None = None) -> Message:
    return Message("user", content, dtmf=dtmf)


async def test_dtmf_selects_intent(agent: ScriptedAgent) -> None:
    text, events = await _reply(agent, _user("The caller pressed 2.", dtmf="2"))
    assert text == "Support here."
    assert not [e for e in events if isinstance(e, ToolCall)]


async def test_yaml_int_dtmf_matches_the_pressed_key(agent: ScriptedAgent) -> None:
    text, _ = await _reply(agent, _user("The caller pressed 1.", dtmf="1"))
    assert text == "Billing. Your invoice is emailed monthly."


async def test_unknown_dtmf_gets_fallback_even_if_content_has_keywords(
    agent: ScriptedAgent,
) -> None:
    text, _ = await _reply(agent, _user("pressed 5 (not support)", dtmf="5"))
    assert text == "Sorry, say that again?"


async def test_keyword_is_case_insensitive_whole_word(agent: ScriptedAgent) -> None:
    assert (await _reply(agent, _user("I have a question about my INVOICE.")))[0].startswith(
        "Billing."
    )
    # "supportive" and "agents" are not the words "support" and "agent".
    assert (await _reply(agent, _user("you are supportive agents")))[0] == "Sorry, say that again?"


async def test_multi_word_keyword_and_first_intent_wins(agent: ScriptedAgent) -> None:
    text, _ = await _reply(agent, _user("please  hang\tup"))
    assert text == "Bye."
    text, _ = await _reply(agent, _user("an agent for billing"))
    assert text.startswith("Billing.")  # billing is listed before person


async def test_empty_transcript_gets_no_speech_reply(agent: ScriptedAgent) -> None:
    assert (await _reply(agent, _user("   ")))[0] == "Please use your keypad."


async def test_unmatched_words_get_fallback(agent: ScriptedAgent) -> None:
    assert (await _reply(agent, _user("what's the weather")))[0] == "Sorry, say that again?"


async def test_only_the_last_user_message_counts(agent: ScriptedAgent) -> None:
    text, _ = await _reply(
        agent,
        Message("system", "You are a menu."),
        _user("billing"),
        Message("assistant", "Billing. Your invoice is emailed monthly."),
        _user("support please"),
        Message("assistant", "(interrupted)"),
    )
    assert text == "Support here."


async def test_no_user_message_gets_fallback(agent: ScriptedAgent) -> None:
    assert (await _reply(agent, Message("system", "hi")))[0] == "Sorry, say that again?"


async def test_hangup_intent_ends_with_end_call(agent: ScriptedAgent) -> None:
    _, events = await _reply(agent, _user("", dtmf="0"))
    assert events[-1] == ToolCall("call_1", "end_call", "{}")
    assert all(isinstance(e, TextDelta) for e in events[:-1])


async def test_transfer_intent_ends_with_transfer_call(agent: ScriptedAgent) -> None:
    _, events = await _reply(agent, _user("get me an agent"))
    call = events[-1]
    assert isinstance(call, ToolCall)
    assert (call.id, call.name) == ("call_1", "transfer_call")
    assert json.loads(call.arguments) == {"to": "+15555550100"}


async def test_reply_arrives_in_word_boundary_pieces(agent: ScriptedAgent) -> None:
    _, events = await _reply(agent, _user("billing"))
    pieces = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(pieces) > 1
    assert "".join(pieces) == MENU["intents"][0]["reply"]
    assert all(p.endswith(" ") for p in pieces[:-1])  # never cut inside a word


async def test_same_input_same_output(agent: ScriptedAgent) -> None:
    assert await _reply(agent, _user("agent")) == await _reply(agent, _user("agent"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"action": "transfer"}, "needs transferTo"),
        ({"transferTo": "+15555550100"}, "only used with action 'transfer'"),
        ({"transferTo": "555-0100", "action": "transfer"}, "should match pattern"),
        ({"action": "dance"}, "Input should be 'none', 'hangup' or 'transfer'"),
        ({"dtmf": "1a"}, "should match pattern"),
        ({"dtmf": None, "keywords": []}, "needs dtmf or keywords"),
        ({"keywords": ["ok", " "]}, "must not be blank"),
        ({"reply": ""}, "at least 1 character"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_intent_validation(change: dict[str, Any], message: str) -> None:
    intent = {"name": "x", "dtmf": "1", "reply": "ok", **change}
    with pytest.raises(ValidationError, match=message):
        ScriptedBlock.model_validate({"provider": "scripted", "intents": [intent]})


def test_duplicate_names_and_digits_are_rejected() -> None:
    one = {"name": "a", "dtmf": "1", "reply": "ok"}
    with pytest.raises(ValidationError, match="dtmf used more than once: 1"):
        ScriptedBlock.model_validate(
            {"provider": "scripted", "intents": [one, {**one, "name": "b"}]}
        )
    with pytest.raises(ValidationError, match="name used more than once: a"):
        ScriptedBlock.model_validate({"provider": "scripted", "intents": [one, {**one, "dtmf": 2}]})


def test_block_rejects_unknown_fields_and_keeps_defaults() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        ScriptedBlock.model_validate({"provider": "scripted", "temperature": 0.2})
    block = ScriptedBlock.model_validate({"provider": "scripted"})
    assert block.intents == () and block.fallback and block.no_speech_reply
