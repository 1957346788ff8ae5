"""Twilio REST control: placing, ending and transferring calls from any instance.

The SDK's client is synchronous (``requests``), so every call runs in a worker thread:
a slow API answer must never stall the audio of the other calls on this event loop.
Error 20404 ("not found") on hang-up means the call is already over, which is what we
wanted (Pipecat #2145 treated it as a failure). The client is the process's, not a
call's: it answers (``end_call`` returns False for "already over", raises
``TwilioRestError``) and the call's transport turns the answer into the call's event.
"""

from __future__ import annotations

import asyncio
import logging

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from callbridge.errors import CallbridgeError
from callbridge.telemetry.logging import log_event

__all__ = ["CALL_NOT_FOUND", "TwilioRest", "TwilioRestError"]

log = logging.getLogger(__name__)

CALL_NOT_FOUND = 20404


class TwilioRestError(CallbridgeError):
    """Twilio's API refused or could not be reached; ``code`` is Twilio's error code."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class TwilioRest:
    """A thin async face on the SDK client. ``base_url`` points it at a local fake."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._client = Client(
            account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout_s)
        )
        if base_url:
            # Edge/region (from TWILIO_EDGE/TWILIO_REGION) would rewrite the host name.
            self._client.edge = None
            self._client.region = None
            self._client.api.base_url = base_url.rstrip("/")

    async def create_call(
        self,
        *,
        to: str,
        from_: str,
        url: str,
        status_callback: str | None = None,
        status_events: tuple[str, ...] = ("initiated", "ringing", "answered", "completed"),
    ) -> str:
        """Place an outbound call that fetches its TwiML from ``url``; returns its CallSid."""
        try:
            sid = await asyncio.to_thread(
                self._create, to, from_, url, status_callback, list(status_events)
            )
        except (TwilioException, OSError) as exc:
            raise _failed(f"placing a call to {to}", exc) from exc
        log_event(log, logging.INFO, "rest.call_created", call_sid=sid)
        return sid

    async def transfer_call(self, call_sid: str, twiml: str) -> None:
        """Replace the call's TwiML (e.g. a ``<Dial>``); the stream ends as Twilio moves on."""
        try:
            await asyncio.to_thread(self._update, call_sid, twiml)
        except (TwilioException, OSError) as exc:
            raise _failed(f"transferring call {call_sid}", exc) from exc
        log_event(log, logging.INFO, "rest.transfer", call_sid=call_sid)

    async def end_call(self, call_sid: str) -> bool:
        """Hang up ``call_sid``. True if we ended it, False if it was already over."""
        try:
            await asyncio.to_thread(self._complete, call_sid)
        except (TwilioException, OSError) as exc:  # requests' errors are OSErrors
            if isinstance(exc, TwilioRestException) and exc.code == CALL_NOT_FOUND:
                log_event(log, logging.INFO, "rest.hangup_already_over", call_sid=call_sid)
                return False
            raise _failed(f"ending call {call_sid}", exc) from exc
        log_event(log, logging.INFO, "rest.hangup", call_sid=call_sid)
        return True

    def _complete(self, call_sid: str) -> None:
        self._client.calls(call_sid).update(status="completed")

    def _create(
        self, to: str, from_: str, url: str, status_callback: str | None, events: list[str]
    ) -> str:
        options: dict[str, object] = {"to": to, "from_": from_, "url": url, "method": "POST"}
        if status_callback:
            options.update(
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=events,
            )
        call = self._client.calls.create(**options)
        return str(call.sid)

    def _update(self, call_sid: str, twiml: str) -> None:
        self._client.calls(call_sid).update(twiml=twiml)


def _failed(doing: str, exc: Exception) -> TwilioRestError:
    """``exc`` from the SDK or the network, said as what we were doing."""
    if isinstance(exc, TwilioRestException):
        return TwilioRestError(
            f"{doing} failed: HTTP {exc.status}, Twilio code {exc.code}: {exc.msg}",
            status=exc.status,
            code=exc.code,
        )
    return TwilioRestError(f"{doing} failed: {exc}")
