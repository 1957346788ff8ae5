"""TwiML checked with an XML parser, as Twilio reads it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from callbridge.twilio import twiml


def test_connect_stream_carries_the_parameters() -> None:
    xml = twiml.connect_stream(
        "wss://example.com/media",
        call_sid="CA123",
        from_number="+15550001111",
        to_number="+15550002222",
        token='v1.1.<&">.sig',
    )
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    [connect] = list(root)
    assert connect.tag == "Connect"
    [stream] = list(connect)
    assert stream.tag == "Stream"
    assert stream.attrib == {"url": "wss://example.com/media"}
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    assert params == {
        "callSid": "CA123",
        "from": "+15550001111",
        "to": "+15550002222",
        "token": 'v1.1.<&">.sig',  # escaped on the wire, intact after parsing
    }


def test_refusal_says_something_then_hangs_up() -> None:
    root = ET.fromstring(twiml.refuse("We are busy & sorry."))
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root[0].text == "We are busy & sorry."


def test_dial_for_transfer() -> None:
    root = ET.fromstring(twiml.dial("+15550003333"))
    assert [(c.tag, c.text) for c in root] == [("Dial", "+15550003333")]
