"""Edge log events that belong in a call's record, picked off the logging stream.

The engine hands its events over typed (``CallLog.on_event``). The socket adapter, the
REST client and the retry policy only log theirs (``media.gap …``), in the call's
logging context. This handler keeps the ones listed in ``EVENTS``, turns
``k=v`` fields into data, and hands them on with the call's SID; those listed in
``ERRORS`` also count in ``callbridge_errors_total{kind}``.

The handler must see INFO records from ``callbridge.*``; ``install`` makes sure the
``callbridge`` logger lets them through (the console handler keeps its own level).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from callbridge.telemetry.logging import current_call
from callbridge.telemetry.metrics import Metrics

__all__ = ["ERRORS", "EVENTS", "EventBridge", "parse_fields"]

EVENTS: Mapping[str, str] = {
    "provider.retry": "provider_retry",
    "media.gap": "gap",
    "stream.backlog": "backlog",
    "stream.paced": "paced",
    "stream.bad_frame": "bad_frame",
    "stream.runner_failed": "runner_error",
    "stream.runner_cancelled": "runner_cancelled",
    "stream.ended": "stream_ended",
    "transport.hangup_rest_failed": "twilio_rest_error",
    "rest.hangup_already_over": "hangup_already_over",
}
"""Log event name → the event kind stored with the call."""

ERRORS: Mapping[str, str] = {
    "provider.retry": "provider_retry",
    "stream.backlog": "backlog",
    "stream.runner_failed": "runner",
    "transport.hangup_rest_failed": "twilio_rest",
    "recording.open_failed": "recording",
}
"""Log event name → ``kind`` label of the errors counter."""

_FIELD = re.compile(r"(\w+)=(.*?)(?=\s\w+=|$)")

Sink = Callable[[str, str, dict[str, Any]], None]


class EventBridge(logging.Handler):
    def __init__(self, sink: Sink, *, metrics: Metrics | None = None) -> None:
        super().__init__(logging.INFO)
        self._sink = sink
        self._metrics = metrics

    def install(self, logger_name: str = "callbridge") -> None:
        logger = logging.getLogger(logger_name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        if self not in logger.handlers:
            logger.addHandler(self)

    def uninstall(self, logger_name: str = "callbridge") -> None:
        logging.getLogger(logger_name).removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        name, data = _event_of(record)
        kind = EVENTS.get(name)
        error = ERRORS.get(name)
        if kind is None and error is None:
            return
        if self._metrics is not None and error is not None:
            self._metrics.errors.labels(error).inc()
        ctx = current_call()
        if kind is not None and ctx is not None and ctx.call_sid:
            try:
                self._sink(ctx.call_sid, kind, data)
            except Exception:  # a logging handler must never raise into the caller
                self.handleError(record)


def _event_of(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    event = getattr(record, "event", None)
    fields = getattr(record, "fields", None)
    if isinstance(event, str) and isinstance(fields, Mapping):
        return event, {str(k): _plain(v) for k, v in fields.items()}
    message = record.getMessage()
    name, _, rest = message.partition(" ")
    return name, parse_fields(rest)


def parse_fields(text: str) -> dict[str, Any]:
    """``a=1 error=x: y z`` → ``{"a": 1, "error": "x: y z"}`` (a value runs to the next key)."""
    return {key: _number(value.strip()) for key, value in _FIELD.findall(text)}


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def _plain(value: object) -> Any:
    """JSON-safe: numbers, strings, bools, and containers of them."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)
