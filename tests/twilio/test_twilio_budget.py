"""A socket's budgets as plain data: a manual clock in, verdicts out."""

from __future__ import annotations

import pytest

from callbridge.twilio.budget import AudioPacer, MarkLedger, TokenBucket


def test_the_bucket_lets_a_burst_through_then_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=20)
    assert sum(bucket.take(0.0) for _ in range(2000)) == 20
    assert sum(bucket.take(0.5) for _ in range(100)) == 5
    assert sum(bucket.take(100.0) for _ in range(100)) == 20  # refills to the burst, no more
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=0, burst=1)


def test_the_ledger_passes_each_sent_mark_once() -> None:
    ledger = MarkLedger(limit=2)
    ledger.sent("a")
    ledger.sent("a")
    assert [ledger.echoed("a"), ledger.echoed("a"), ledger.echoed("a")] == [True, True, False]
    assert not ledger.echoed("never-sent")
    for name in ("x", "y", "z"):  # past the limit the oldest unechoed name is forgotten
        ledger.sent(name)
    assert [ledger.echoed(n) for n in ("x", "y", "z")] == [False, True, True]


def test_the_pacer_holds_audio_ahead_of_real_time_beyond_the_allowance() -> None:
    pacer = AudioPacer(allowance_s=1.0)
    pacer.begin(0.0)
    frame = 160  # 20 ms of μ-law
    assert [pacer.wait_s(frame, 0.0) for _ in range(50)] == [0.0] * 50  # 1 s at once: ok
    assert pacer.wait_s(frame, 0.0) == pytest.approx(0.02)
    assert pacer.wait_s(frame, 0.04) == 0.0  # the clock caught up
    assert pacer.wait_s(48_000, 0.04) == pytest.approx(6.0)  # one 6 s "frame" waits 6 s


def test_a_real_time_stream_with_a_stall_is_never_held() -> None:
    pacer = AudioPacer()  # 2 s allowance
    pacer.begin(0.0)
    for i in range(500):
        sent_at = i * 0.02
        # The network held frames 200..274 back for 1.5 s; they arrive as one burst.
        arrived_at = max(sent_at, 5.5) if i >= 200 else sent_at
        assert pacer.wait_s(160, arrived_at) == 0.0
