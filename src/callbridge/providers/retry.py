"""Retry with backoff for provider calls that failed in a way a retry can help.

DESIGN.md §3: a failed provider call is retried after 1 s, 2 s and 4 s; after the last
retry fails the error goes up and the engine apologises and hangs up. Only
``ProviderError(retryable=True)`` is retried: a bad key or a malformed request fails the
same way every time, so waiting 7 s for it would only delay the apology.

``sleep`` is injectable so tests run the schedule without waiting. Each retry is logged
for operators and, when the caller passes ``on_retry`` (the engine does, built with
``record_retries`` from the call's ``emit``), reaches the call's record as a typed
``ProviderRetried``; nothing reads the log line back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from callbridge.call_events import Emit, ProviderRetried
from callbridge.errors import ProviderError
from callbridge.providers.base import close_now
from callbridge.telemetry.logging import log_event

__all__ = [
    "DEFAULT_DELAYS_S",
    "OnRetry",
    "Sleep",
    "record_retries",
    "retry_call",
    "retry_stream",
]

T = TypeVar("T")

DEFAULT_DELAYS_S: tuple[float, ...] = (1.0, 2.0, 4.0)

Sleep = Callable[[float], Awaitable[None]]
OnRetry = Callable[[ProviderError, int, float], None]
"""Told ``(error, retry_number, delay_s)`` before each wait, so the engine can record it."""

log = logging.getLogger(__name__)


def record_retries(emit: Emit) -> OnRetry:
    """The ``on_retry`` hook that reports each retry to a call as ``ProviderRetried``."""

    def on_retry(exc: ProviderError, retry: int, delay_s: float) -> None:
        emit(ProviderRetried(exc.provider, retry, delay_s, str(exc)))

    return on_retry


async def retry_call(
    operation: Callable[[], Awaitable[T]],
    *,
    delays_s: Sequence[float] = DEFAULT_DELAYS_S,
    sleep: Sleep = asyncio.sleep,
    on_retry: OnRetry | None = None,
) -> T:
    """Run ``operation``; on a retryable ``ProviderError`` wait and run it again.

    One first attempt plus one retry per entry of ``delays_s`` (four attempts by default).
    """
    retries = 0
    while True:
        try:
            return await operation()
        except ProviderError as exc:
            if not exc.retryable or retries >= len(delays_s):
                raise
            delay = delays_s[retries]
            retries += 1
            _announce(exc, retries, delay, on_retry)
        await sleep(delay)


async def retry_stream(
    open_stream: Callable[[], AsyncIterator[T]],
    *,
    delays_s: Sequence[float] = DEFAULT_DELAYS_S,
    sleep: Sleep = asyncio.sleep,
    on_retry: OnRetry | None = None,
) -> AsyncIterator[T]:
    """Yield from a fresh stream, reopening it only while nothing has been yielded yet.

    Once text or audio has reached the consumer, a restart would repeat it to the caller,
    so a failure after the first item is raised as it is.
    """
    retries = 0
    while True:
        stream = open_stream()
        yielded = False
        try:
            async for item in stream:
                yielded = True
                yield item
            return
        except ProviderError as exc:
            if yielded or not exc.retryable or retries >= len(delays_s):
                raise
            delay = delays_s[retries]
            retries += 1
            _announce(exc, retries, delay, on_retry)
        finally:
            await close_now(stream)
        await sleep(delay)


def _announce(exc: ProviderError, retry: int, delay: float, on_retry: OnRetry | None) -> None:
    log_event(
        log,
        logging.WARNING,
        "provider.retry",
        provider=exc.provider,
        retry=retry,
        delay_s=delay,
        error=str(exc),
    )
    if on_retry is not None:
        on_retry(exc, retry, delay)
