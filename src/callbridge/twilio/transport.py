"""``CallTransport`` over a Media Streams socket: the engine's way out to the caller.

It knows only two functions of the socket, send a text frame and close, so it works over
any WebSocket library and in tests over a list. Sends are serialised with a lock (the
runner and a hang-up may race), and a send after the line closed is dropped and counted
rather than raised: the caller is gone and ``CallerHungUp`` is already on its way.

Audio is 25 messages a second per call (40 ms each: ``engine.playout``; any whole
number of frames is sent as given): with ``write_now`` (a socket that can write a frame
at once, ``MediaSocket.write_text_now``) a ``media`` message is the stream's prefix, the
base64 and a suffix, written at once (no lock, no wait on the socket) whenever no other
send is under way; otherwise it takes the same way as everything else. Marks and
``clear`` are written at once the same way, so a ``clear`` leaves in the very call that
asks for it, behind everything sent before it and ahead of everything after.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from callbridge.call_events import Emit, HangupAlreadyOver, HangupFailed, ignore
from callbridge.errors import CallbridgeError
from callbridge.telemetry.logging import log_event
from callbridge.twilio import codec, twiml
from callbridge.twilio.budget import MarkLedger
from callbridge.twilio.rest import TwilioRestError

__all__ = ["CallControl", "LineClosed", "TwilioTransport"]

log = logging.getLogger(__name__)

_b64encode = binascii.b2a_base64
_MEDIA_END = b'"}}'


class LineClosed(CallbridgeError):
    """Raised by a ``send_text`` function when the socket is already closed."""


class CallControl(Protocol):
    """The REST half of the line (``TwilioRest``, or a test double)."""

    async def end_call(self, call_sid: str) -> bool: ...

    async def transfer_call(self, call_sid: str, twiml: str) -> None: ...


class TwilioTransport:
    """Implements ``callbridge.engine.transport.CallTransport`` for Twilio."""

    def __init__(
        self,
        *,
        stream_sid: str,
        call_sid: str,
        send_text: Callable[[str], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        rest: CallControl | None = None,
        emit: Emit = ignore,
        write_now: Callable[[bytes], bool] | None = None,
    ) -> None:
        """``emit``: the call's events (a hang-up REST refused or already over).
        ``write_now``: writes one text frame (UTF-8) at once, or says False and writes
        nothing (the socket is paused or closed: then ``send_text`` waits or raises)."""
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self._media_prefix = codec.media_prefix(stream_sid).encode()
        self._clear = codec.clear(stream_sid)
        self._write_now = write_now
        self._sending = 0  # sends that took the lock's way and have not finished
        self._send_text = send_text
        self._close = close
        self._rest = rest
        self._emit = emit
        self._lock = asyncio.Lock()
        self.closed = False
        self.frames_sent = 0
        self.dropped_after_close = 0
        self.marks = MarkLedger()
        """Marks sent and not echoed yet: the socket adapter passes on only those echoes."""

    async def send_audio(self, ulaw: bytes) -> None:
        message = self._media_prefix + _b64encode(ulaw, newline=False) + _MEDIA_END
        write_now = self._write_now
        if write_now is not None and not self._sending and not self.closed and write_now(message):
            self.frames_sent += 1
            return
        await self._send(message.decode("ascii"))

    async def send_mark(self, name: str) -> None:
        self.marks.sent(name)  # before the send: the echo may arrive before it returns
        text = codec.mark(self.stream_sid, name)
        if not self._written_now(text):
            await self._send(text)

    async def send_clear(self) -> None:
        if not self._written_now(self._clear):
            await self._send(self._clear)

    async def hangup(self) -> None:
        """End the call at Twilio (so the PSTN leg drops), then close our socket.

        Closing the socket alone would let Twilio run the TwiML after ``<Connect>``; the
        REST call is what ends the call. A REST failure is logged and the socket is
        closed anyway, so the engine's hang-up always finishes.
        """
        if self._rest is not None:
            try:
                ended = await self._rest.end_call(self.call_sid)
            except CallbridgeError as exc:
                log.exception("transport.hangup_rest_failed call_sid=%s", self.call_sid)
                self._emit(HangupFailed(str(exc)))
            else:
                if not ended:
                    self._emit(HangupAlreadyOver())
        else:
            log_event(log, logging.WARNING, "transport.hangup_without_rest")
        await self.close()

    async def transfer(self, to: str) -> None:
        """Hand the caller to ``to`` with a ``<Dial>``; Twilio then ends this stream.

        Raises ``CallbridgeError`` when it cannot be done, so the engine can say so.
        """
        if self._rest is None:
            raise TwilioRestError("cannot transfer: no Twilio REST credentials configured")
        await self._rest.transfer_call(self.call_sid, twiml.dial(to))
        log_event(log, logging.INFO, "transport.transferred")
        await self.close()

    async def close(self) -> None:
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            await self._close()

    def _written_now(self, text: str) -> bool:
        """Written at once, as ``send_audio`` writes audio (nothing under way before it)."""
        write_now = self._write_now
        if write_now is None or self._sending or self.closed or not write_now(text.encode()):
            return False
        self.frames_sent += 1
        return True

    async def _send(self, text: str) -> None:
        self._sending += 1  # until it is done, audio waits its turn here too
        try:
            async with self._lock:
                if self.closed:
                    self._dropped()
                    return
                try:
                    await self._send_text(text)
                except LineClosed:
                    self.closed = True
                    self._dropped()
                    return
                self.frames_sent += 1
        finally:
            self._sending -= 1

    def _dropped(self) -> None:
        self.dropped_after_close += 1
        if self.dropped_after_close == 1:
            log_event(log, logging.INFO, "transport.send_after_close")
