"""The retry helper on its own: schedule, what it retries, and the retry announcements."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callbridge.errors import ConfigError, ProviderError
from callbridge.providers.retry import retry_call, retry_stream
from providers_cloud.helpers import RecordingSleep


class Flaky:
    """Fails with the given errors in turn, then answers ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def transient() -> ProviderError:
    return ProviderError("x", "503", retryable=True)


async def test_retries_with_1_2_4_then_succeeds(sleep: RecordingSleep) -> None:
    seen: list[tuple[int, float]] = []
    flaky = Flaky(transient(), transient(), transient())
    result = await retry_call(flaky, sleep=sleep, on_retry=lambda e, n, d: seen.append((n, d)))
    assert result == "ok" and flaky.calls == 4
    assert sleep.delays == [1.0, 2.0, 4.0] and seen == [(1, 1.0), (2, 2.0), (3, 4.0)]


async def test_gives_up_after_the_last_retry(sleep: RecordingSleep) -> None:
    flaky = Flaky(*(transient() for _ in range(4)))
    with pytest.raises(ProviderError):
        await retry_call(flaky, sleep=sleep)
    assert flaky.calls == 4 and sleep.delays == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("error", [ProviderError("x", "401", retryable=False),
                                   ConfigError("bad"), ValueError("bug")])
async def test_never_retries_what_a_retry_cannot_fix(sleep: RecordingSleep,
                                                     error: Exception) -> None:
    flaky = Flaky(error)
    with pytest.raises(type(error)):
        await retry_call(flaky, sleep=sleep)
    assert flaky.calls == 1 and sleep.delays == []


async def test_custom_schedule(sleep: RecordingSleep) -> None:
    flaky = Flaky(transient(), transient())
    assert await retry_call(flaky, sleep=sleep, delays_s=(0.1, 0.2)) == "ok"
    assert sleep.delays == [0.1, 0.2]


async def test_stream_retry_closes_each_failed_attempt(sleep: RecordingSleep) -> None:
    closed: list[int] = []
    attempts = 0

    async def stream() -> AsyncIterator[str]:
        nonlocal attempts
        attempts += 1
        number = attempts
        try:
            if number < 3:
                raise transient()
            yield "a"
            yield "b"
        finally:
            closed.append(number)

    items = [item async for item in retry_stream(stream, sleep=sleep)]
    assert items == ["a", "b"] and closed == [1, 2, 3] and sleep.delays == [1.0, 2.0]
