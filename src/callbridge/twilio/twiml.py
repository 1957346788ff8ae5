"""TwiML we answer with, built by the SDK's ``VoiceResponse`` so escaping is never ours."""

from __future__ import annotations

from twilio.twiml.voice_response import Connect, VoiceResponse

__all__ = ["REFUSAL_MESSAGE", "connect_stream", "dial", "redirect", "refuse"]

REFUSAL_MESSAGE = "Sorry, we cannot take your call right now. Please try again later. Goodbye."


def connect_stream(
    stream_url: str, *, call_sid: str, from_number: str, to_number: str, token: str
) -> str:
    """``<Connect><Stream>``: a bidirectional stream (``<Start><Stream>`` only listens).

    The stream URL takes no query string, so everything the socket needs travels as
    ``<Parameter>``s and comes back in the ``start`` message's ``customParameters``.
    """
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in (("callSid", call_sid), ("from", from_number), ("to", to_number)):
        stream.parameter(name=name, value=value)
    stream.parameter(name="token", value=token)
    response.append(connect)
    return str(response.to_xml())


def refuse(message: str = REFUSAL_MESSAGE) -> str:
    """A polite ``<Say>`` then ``<Hangup/>``, for calls we cannot serve (e.g. at capacity)."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response.to_xml())


def redirect(url: str) -> str:
    """``<Redirect>``: Twilio fetches ``url`` for this call's TwiML instead (an overflow
    pool, or the balancer that sends it to an instance with room)."""
    response = VoiceResponse()
    response.redirect(url, method="POST")
    return str(response.to_xml())


def dial(to: str) -> str:
    """``<Dial>`` for a transfer: replaces the running TwiML (and so ends our stream)."""
    response = VoiceResponse()
    response.dial(to)
    return str(response.to_xml())
