"""Structured logging: every line carries the callSid/streamSid of the call it belongs to.

The ids live in a ContextVar set once when a call starts; tasks created inside the call
inherit it, and a Filter copies it onto each record, so no log call has to pass ids by
hand. Secrets are never passed to the logger; the redactor is the belt to those braces.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = [
    "CallContext",
    "CallContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "bind_call",
    "call_context",
    "configure_logging",
    "current_call",
    "log_event",
]


@dataclass(frozen=True, slots=True)
class CallContext:
    call_sid: str = ""
    stream_sid: str = ""


_current: ContextVar[CallContext | None] = ContextVar("callbridge_call", default=None)


def current_call() -> CallContext | None:
    return _current.get()


def bind_call(call_sid: str, stream_sid: str = "") -> None:
    """Tag the current task (and tasks it creates from now on) with the call's ids."""
    _current.set(CallContext(call_sid=call_sid, stream_sid=stream_sid))


@contextmanager
def call_context(call_sid: str, stream_sid: str = "") -> Iterator[None]:
    """Like ``bind_call`` but undone on exit, for request handlers that outlive no call."""
    token = _current.set(CallContext(call_sid=call_sid, stream_sid=stream_sid))
    try:
        yield
    finally:
        _current.reset(token)


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: object) -> None:
    """Log ``event k=v …`` for people and keep the fields structured for the JSON line."""
    if not logger.isEnabledFor(level):
        return
    text = " ".join([event, *(f"{k}={v}" for k, v in fields.items())])
    logger.log(level, text, extra={"event": event, "fields": fields}, stacklevel=2)


class CallContextFilter(logging.Filter):
    """Copies the call ids onto every record passing through a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        record.call_sid = ctx.call_sid if ctx else ""
        record.stream_sid = ctx.stream_sid if ctx else ""
        return True


class _Redacting(logging.Formatter):
    def __init__(self, fmt: str | None = None, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        # Short strings would redact innocent text; real secrets are long.
        self._secrets = tuple(s for s in secrets if len(s) >= 8)

    def redact(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, "[redacted]")
        return text


class JsonFormatter(_Redacting):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("call_sid", "stream_sid"):
            value = getattr(record, key, "")
            if value:
                out[key] = value
        event = getattr(record, "event", None)
        if event:
            out["event"] = event
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for k, v in fields.items():
                out.setdefault(str(k), v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(out, default=str))


class TextFormatter(_Redacting):
    """Human-readable lines for a terminal."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", secrets)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        call_sid = getattr(record, "call_sid", "")
        if call_sid:
            text += f" call_sid={call_sid}"
        return self.redact(text)


def configure_logging(
    level: str = "INFO",
    fmt: str = "json",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Install one handler on the root logger (replacing any earlier one of ours)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CallContextFilter())
    secrets = tuple(secrets)
    handler.setFormatter(
        JsonFormatter(secrets=secrets) if fmt == "json" else TextFormatter(secrets)
    )
    handler.set_name("callbridge")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "callbridge"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The SDK logs every REST request at INFO, headers included; we log our own summary.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    return handler
