"""TwilioTransport: the engine's outbound calls become Twilio's JSON, in order."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from callbridge.call_events import CallEvent, HangupAlreadyOver, HangupFailed
from callbridge.engine.transport import CallTransport
from callbridge.twilio.rest import TwilioRestError
from callbridge.twilio.transport import LineClosed, TwilioTransport

STREAM = "MZ" + "3" * 32
CALL = "CA" + "4" * 32


class Line:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.closed = 0
        self.broken = False

    async def send(self, text: str) -> None:
        if self.broken:
            raise LineClosed("peer went away")
        self.sent.append(json.loads(text))

    async def close(self) -> None:
        self.closed += 1


class Rest:
    def __init__(self, fail: bool = False, over: bool = False) -> None:
        self.log: list[tuple[str, str]] = []
        self.fail = fail
        self.over = over  # Twilio answers 20404: the call had already ended

    async def end_call(self, call_sid: str) -> bool:
        self.log.append(("end", call_sid))
        if self.fail:
            raise TwilioRestError("boom", status=500, code=20500)
        return not self.over

    async def transfer_call(self, call_sid: str, twiml: str) -> None:
        self.log.append(("transfer", twiml))


def _transport(line: Line, rest: Rest | None = None) -> TwilioTransport:
    return TwilioTransport(
        stream_sid=STREAM, call_sid=CALL, send_text=line.send, close=line.close, rest=rest
    )


async def test_sends_media_mark_clear_in_order() -> None:
    line = Line()
    transport: CallTransport = _transport(line)
    await transport.send_audio(b"\xff" * 160)
    await transport.send_mark("seg-1")
    await transport.send_clear()
    assert [m["event"] for m in line.sent] == ["media", "mark", "clear"]
    assert all(m["streamSid"] == STREAM for m in line.sent)
    assert line.sent[1]["mark"] == {"name": "seg-1"}


async def test_hangup_ends_the_call_at_twilio_then_closes() -> None:
    line, rest = Line(), Rest()
    transport = _transport(line, rest)
    await transport.hangup()
    assert rest.log == [("end", CALL)]
    assert line.closed == 1
    await transport.send_audio(b"\xff")  # after close: dropped, counted, not raised
    assert line.sent == [] and transport.dropped_after_close == 1
    await transport.hangup()
    assert line.closed == 1


async def test_hangup_closes_even_when_rest_fails() -> None:
    line = Line()
    await _transport(line, Rest(fail=True)).hangup()
    assert line.closed == 1


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        (Rest(), []),
        (Rest(over=True), [HangupAlreadyOver()]),
        (Rest(fail=True), [HangupFailed("boom")]),
    ],
)
async def test_a_hangup_tells_the_call_what_twilio_answered(
    rest: Rest, expected: list[CallEvent]
) -> None:
    line, emitted = Line(), list[CallEvent]()
    transport = TwilioTransport(stream_sid=STREAM, call_sid=CALL, send_text=line.send,
                                close=line.close, rest=rest, emit=emitted.append)
    await transport.hangup()
    assert emitted == expected
    assert line.closed == 1


async def test_a_broken_line_stops_sending_quietly() -> None:
    line = Line()
    transport = _transport(line)
    line.broken = True
    await transport.send_audio(b"\x00")
    await transport.send_mark("x")
    assert transport.closed and transport.dropped_after_close == 2


async def test_transfer_dials_and_closes() -> None:
    line, rest = Line(), Rest()
    await _transport(line, rest).transfer("+15550001234")
    [(kind, xml)] = rest.log
    assert kind == "transfer" and "<Dial>+15550001234</Dial>" in xml
    assert line.closed == 1
    with pytest.raises(TwilioRestError):
        await _transport(Line(), None).transfer("+15550001234")


class PausingLine(Line):
    """A socket that can write a frame at once (``write_now``) unless it is paused; a
    paused ``send`` waits until ``resume``."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.at_once = 0
        self._resumed = asyncio.Event()

    def write_now(self, utf8: bytes) -> bool:
        if self.paused or self.broken:
            return False
        self.at_once += 1
        self.sent.append(json.loads(utf8))
        return True

    async def send(self, text: str) -> None:
        if self.paused:
            await self._resumed.wait()
        await super().send(text)

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()


def _fast_transport(line: PausingLine) -> TwilioTransport:
    return TwilioTransport(
        stream_sid=STREAM,
        call_sid=CALL,
        send_text=line.send,
        close=line.close,
        write_now=line.write_now,
    )


async def test_audio_written_at_once_is_the_same_message() -> None:
    audio = bytes(range(256)) * 2
    fast_line, slow_line = PausingLine(), Line()
    await _fast_transport(fast_line).send_audio(audio)
    await _transport(slow_line).send_audio(audio)
    assert fast_line.at_once == 1
    assert fast_line.sent == slow_line.sent
    assert fast_line.sent[0]["media"] == {"payload": base64.b64encode(audio).decode()}


async def test_audio_waits_its_turn_behind_a_send_under_way() -> None:
    line = PausingLine()
    transport = _fast_transport(line)
    await transport.send_audio(b"\x01")  # at once
    line.paused = True
    mark = asyncio.create_task(transport.send_mark("m1"))  # waits for the socket
    await asyncio.sleep(0)
    line.paused = False  # writable again, but the mark is still under way:
    audio = asyncio.create_task(transport.send_audio(b"\x02"))  # not ahead of it
    await asyncio.sleep(0)
    assert [m["event"] for m in line.sent] == ["media"]
    line.resume()
    await asyncio.gather(mark, audio)
    assert [m["event"] for m in line.sent] == ["media", "mark", "media"]
    assert [m["media"]["payload"] for m in line.sent if m["event"] == "media"] == ["AQ==", "Ag=="]
    await transport.send_audio(b"\x03")  # nothing under way: at once again
    assert line.at_once == 2 and transport.frames_sent == 4


async def test_audio_on_a_closed_line_is_dropped_as_before() -> None:
    line = PausingLine()
    transport = _fast_transport(line)
    line.broken = True
    await transport.send_audio(b"\x00")
    await transport.send_audio(b"\x00")
    assert transport.closed and transport.dropped_after_close == 2 and line.sent == []


async def test_forty_ms_of_audio_is_one_message_written_at_once() -> None:
    line = PausingLine()
    transport = _fast_transport(line)
    audio = bytes(range(160)) + bytes(range(90, 250))  # two different frames
    await transport.send_audio(audio)
    [message] = line.sent
    assert line.at_once == 1 and transport.frames_sent == 1
    assert base64.b64decode(message["media"]["payload"]) == audio  # type: ignore[index]


async def test_marks_and_clear_are_written_at_once_in_order() -> None:
    line = PausingLine()
    transport = _fast_transport(line)
    await transport.send_audio(b"\x01" * 320)
    await transport.send_mark("m1")
    await transport.send_audio(b"\x02" * 160)
    await transport.send_clear()
    assert line.at_once == 4  # no lock, no wait on the socket for any of them
    assert [m["event"] for m in line.sent] == ["media", "mark", "media", "clear"]
    assert line.sent[1] == {"event": "mark", "streamSid": STREAM, "mark": {"name": "m1"}}
    assert line.sent[3] == {"event": "clear", "streamSid": STREAM}
    assert transport.marks.echoed("m1")  # the mark is expected back


async def test_a_clear_behind_audio_waiting_on_the_socket_keeps_its_place() -> None:
    """The socket is full: audio waits, the barge-in's clear waits behind it (never
    ahead), and the next reply's audio behind the clear; nothing sent before the clear
    goes out after it."""
    line = PausingLine()
    transport = _fast_transport(line)
    line.paused = True
    old = asyncio.create_task(transport.send_audio(b"\x01" * 320))
    await asyncio.sleep(0)
    line.paused = False  # writable, but the old audio is still under way:
    clear = asyncio.create_task(transport.send_clear())  # not written ahead of it
    await asyncio.sleep(0)
    new = asyncio.create_task(transport.send_audio(b"\x02" * 320))
    await asyncio.sleep(0)
    assert line.sent == []
    line.resume()
    await asyncio.gather(old, clear, new)
    assert [m["event"] for m in line.sent] == ["media", "clear", "media"]
    payloads = [m["media"]["payload"] for m in line.sent if m["event"] == "media"]  # type: ignore[index]
    assert [base64.b64decode(p)[0] for p in payloads] == [1, 2]
