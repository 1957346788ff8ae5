"""Twilio's side of call set-up, for tests that need a stream token the real way."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import httpx

from support import twilio_stream as tw
from support.twilio_sign import sign_form

__all__ = ["Answered", "answer_call"]


@dataclass
class Answered:
    """What POST /voice gave back for one call."""

    call_sid: str
    stream_url: str
    params: dict[str, str]


async def answer_call(
    client: httpx.AsyncClient,
    public_origin: str,
    auth_token: str,
    call_sid: str | None = None,
) -> Answered:
    """Play Twilio's part of call set-up: a signed POST /voice, then read the TwiML."""
    call_sid = call_sid or tw.call_sid()
    params = {
        "CallSid": call_sid,
        "AccountSid": tw.ACCOUNT_SID,
        "From": "+15550001111",
        "To": "+15550002222",
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    body, sig = sign_form(auth_token, f"{public_origin}/voice", params)
    resp = await client.post(
        "/voice",
        content=body,
        headers={"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200, resp.text
    stream = ET.fromstring(resp.text).find("./Connect/Stream")
    assert stream is not None
    got = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    return Answered(call_sid, stream.attrib["url"], got)
