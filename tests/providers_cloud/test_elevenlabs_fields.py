"""``audio_fields``: the two fields of an audio answer, read straight from the text only
when that gives exactly what ``json.loads`` would; anything else goes the slow way."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest

from callbridge.providers.tts.elevenlabs_call import audio_fields

AUDIO = base64.b64encode(os.urandom(800)).decode()
ALIGNMENT = {"chars": ["a", '"', "}", ","], "charStartTimesMs": [0, 25, 50, 75],
             "charDurationsMs": [25, 25, 25, 25]}


def message(body: dict[str, Any], **dumps: Any) -> str:
    return json.dumps(body, **dumps)


@pytest.mark.parametrize("dumps", [{}, {"separators": (",", ":")}, {"indent": 1}])
@pytest.mark.parametrize("body", [
    {"audio": AUDIO, "normalizedAlignment": ALIGNMENT, "alignment": ALIGNMENT,
     "contextId": "s12"},
    {"audio": AUDIO, "isFinal": None, "alignment": ALIGNMENT, "contextId": "s1"},
    {"audio": AUDIO, "contextId": "s3", "alignment": None},
])
def test_the_usual_shapes_read_as_json_would(body: dict[str, Any], dumps: dict[str, Any]) -> None:
    text = message(body, **dumps)
    if not text.startswith('{"audio":'):
        assert audio_fields(text) is None  # indented: not the plain shape, slow path
        return
    parsed = json.loads(text)
    assert audio_fields(text) == (parsed["audio"], parsed["contextId"])


@pytest.mark.parametrize("text", [
    "",
    "{'audio': not json",
    '{"audio": "AAAA',  # cut off
    '{"audio": "AAAA", "contextId": "s1"',  # no closing brace
    '{"audio": null, "contextId": "s1"}',
    '{"audio": "", "contextId": "s1"}',
    '{"audio": "AA\\/AA", "contextId": "s1"}',  # an escaped slash: let json decode it
    '{"audio": "AAAA", "isFinal": true, "contextId": "s1"}',
    '{"audio": "AAAA"}',  # no context
    '{"audio": "AAAA", "contextId": 7}',
    '{"audio": "AAAA", "x\\"contextId": "evil", "y": 1}',
    '{"isFinal": true, "contextId": "s1"}',
    '{"message": "bad", "error": "max_active_conversations", "code": 1008}',
])
def test_anything_else_takes_the_full_parser(text: str) -> None:
    assert audio_fields(text) is None
