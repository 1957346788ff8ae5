"""Twilio's message shapes, the webhook form and signature, and TwiML reading."""

from __future__ import annotations

import base64
import json

import pytest
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from callbridge.errors import TwilioProtocolError
from callbridge.simulator import wire
from callbridge.simulator.dialer import CallOptions, parse_twiml, sign, webhook_form

SID = "MZ" + "0" * 32


def test_start_carries_custom_parameters_and_media_format() -> None:
    m = json.loads(
        wire.start(1, account_sid="AC1", call_sid="CA1", stream_sid=SID, parameters={"token": "t"})
    )
    assert m["event"] == "start" and m["sequenceNumber"] == "1" and m["streamSid"] == SID
    assert m["start"]["customParameters"] == {"token": "t"}
    assert m["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    assert m["start"]["callSid"] == "CA1" and m["start"]["tracks"] == ["inbound"]


def test_media_numbers_are_strings_and_payload_is_base64() -> None:
    payload = base64.b64encode(b"\xff" * 160).decode()
    m = json.loads(wire.media(7, 3, 40, SID, payload))
    assert m == {
        "event": "media",
        "sequenceNumber": "7",
        "media": {"track": "inbound", "chunk": "3", "timestamp": "40", "payload": payload},
        "streamSid": SID,
    }


def test_dtmf_mark_stop_shapes() -> None:
    assert json.loads(wire.dtmf(4, SID, "5"))["dtmf"] == {"track": "inbound_track", "digit": "5"}
    assert json.loads(wire.mark_echo(5, SID, "seg-1"))["mark"] == {"name": "seg-1"}
    stop = json.loads(wire.stop(6, account_sid="AC1", call_sid="CA1", stream_sid=SID))
    assert stop["stop"] == {"accountSid": "AC1", "callSid": "CA1"}
    assert json.loads(wire.connected()) == {
        "event": "connected",
        "protocol": "Call",
        "version": "1.0.0",
    }


def test_parse_server_messages() -> None:
    audio = base64.b64encode(b"\x01\x02").decode()
    media = {"event": "media", "streamSid": SID, "media": {"payload": audio}}
    assert wire.parse_server(json.dumps(media), SID) == wire.ServerMedia(b"\x01\x02")
    mark = {"event": "mark", "streamSid": SID, "mark": {"name": "x"}}
    assert wire.parse_server(json.dumps(mark), SID) == wire.ServerMark("x")
    assert wire.parse_server(json.dumps({"event": "clear", "streamSid": SID}), SID) == (
        wire.ServerClear()
    )
    other = wire.parse_server('{"event": "hello"}', SID)
    assert isinstance(other, wire.ServerOther) and other.event == "hello"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json", "expected JSON"),
        ("[1]", "expected a JSON object"),
        ('{"event": "clear", "streamSid": "MZother"}', "expected streamSid"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {}}), "media.payload"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "**"}}), "base64"),
        ('{"event": 3}', "'event' string"),
    ],
)
def test_parse_server_rejects_what_twilio_rejects(text: str, why: str) -> None:
    with pytest.raises(TwilioProtocolError, match=why):
        wire.parse_server(text, SID)
    with pytest.raises(TwilioProtocolError, match="binary"):
        wire.parse_server(b"\x00", SID)


def test_webhook_form_and_signature_validate_with_the_sdk() -> None:
    options = CallOptions("http://127.0.0.1:9/", "secret", from_number="+1555", to_number="+1666")
    form = webhook_form(options)
    for key in ("CallSid", "AccountSid", "From", "To", "CallStatus", "Direction", "ApiVersion"):
        assert form[key]
    assert form["CallSid"].startswith("CA") and len(form["CallSid"]) == 34
    assert options.webhook_url == "http://127.0.0.1:9/voice"
    signature = sign("secret", options.webhook_url, form)
    assert RequestValidator("secret").validate(options.webhook_url, form, signature)
    assert not RequestValidator("other").validate(options.webhook_url, form, signature)


def test_parse_twiml_from_the_sdk() -> None:
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url="wss://example.test/media")
    stream.parameter(name="token", value="abc&<")
    stream.parameter(name="callSid", value="CA1")
    response.append(connect)
    plan = parse_twiml(str(response.to_xml()))
    assert plan.stream_url == "wss://example.test/media"
    assert plan.parameters == {"token": "abc&<", "callSid": "CA1"}
    assert not plan.hangup


def test_parse_twiml_refusal_and_garbage() -> None:
    response = VoiceResponse()
    response.say("Busy")
    response.hangup()
    plan = parse_twiml(str(response.to_xml()))
    assert plan.stream_url is None and plan.hangup and plan.says == ("Busy",)
    with pytest.raises(ValueError, match="invalid XML"):
        parse_twiml("<Response>")
    with pytest.raises(ValueError, match="expected <Response>"):
        parse_twiml("<Foo/>")
    with pytest.raises(ValueError, match="Stream url"):
        parse_twiml("<Response><Connect/></Response>")
