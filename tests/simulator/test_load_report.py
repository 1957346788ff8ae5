"""The benchmark parent: the steady window, the per-N row, the client-bound verdict."""

from __future__ import annotations

import os

from callbridge.simulator.load import (
    CLIENT_LAG_LIMIT_MS,
    RunResult,
    Sample,
    SteadyWindow,
    bars_missed,
    cpu_pct,
    max_calls_ok,
    proc_sample,
    table,
    turn_limit,
)


def test_window_opens_when_the_last_call_is_up_and_closes_at_the_first_end() -> None:
    w = SteadyWindow(3)
    assert w.feed(b"EE") == (False, False)
    assert w.feed(b"X") == (False, False)  # an end before the steady state is no end of it
    assert w.feed(b"E") == (True, False)
    assert w.feed(b"X") == (False, True)
    assert w.feed(b"XX") == (False, False)  # only the first end counts


def test_window_counts_calls_that_never_came_up_and_handles_one_read_of_all() -> None:
    w = SteadyWindow(3)
    assert w.feed(b"EFEX") == (True, True)
    assert SteadyWindow(2).feed(b"FF") == (False, False)  # nothing up: no steady state


def test_cpu_pct_is_cpu_seconds_over_wall_seconds() -> None:
    assert cpu_pct(Sample(10.0, 5.0, 0), Sample(14.0, 7.0, 0)) == 50.0
    assert cpu_pct(Sample(10.0, 5.0, 0), Sample(10.0, 7.0, 0)) is None


def test_proc_sample_reads_this_process_and_skips_gone_ones() -> None:
    s = proc_sample([os.getpid(), 2**22 + 1])
    assert s.cpu_s > 0 and s.rss_kib > 1000


def level(calls: int, lag: float, jitter: float, **extra: object) -> RunResult:
    result = RunResult(calls, cpu_pct=40.0, client_cpu_pct=30.0, rss_mib=110.0, rss_idle_mib=100.0)
    result.results = [
        {
            "ok": True,
            "why": "",
            "send_lag_ms": [0.5] * 98 + [lag] * 2,
            "jitter_ms": [1.0, jitter],
            "latency_ms": [300.0],
            "bargein_ms": [150.0],
            "underruns": 0,
            **extra,
        }
        for _ in range(calls)
    ]
    return result


def test_row_marks_a_client_bound_level_and_the_verdict_skips_it() -> None:
    fine = level(10, lag=1.0, jitter=2.0).row()
    assert not fine["client_bound"] and fine["client_lag_p99_ms"] == 1.0
    assert fine["server_cpu_pct"] == 40.0 and fine["cpu_per_call_pct"] == 4.0
    assert fine["client_cpu_pct"] == 30 and fine["client_cpu_per_call_pct"] == 3.0
    assert fine["rss_per_call_kib"] == 1024.0
    bound = level(50, lag=CLIENT_LAG_LIMIT_MS + 1, jitter=2.0).row()
    assert bound["client_bound"]
    underrun = level(20, lag=1.0, jitter=2.0, underruns=1).row()
    jittery = level(30, lag=1.0, jitter=20.0).row()
    assert max_calls_ok([fine, bound, underrun]) == 10
    # Jitter is reported, not a bar: 20 ms late inside a 200 ms lead is not heard.
    assert max_calls_ok([fine, jittery]) == 30 and bars_missed(jittery, None) == []
    text = table([fine, bound])
    assert "| 10 | 40.0 | 4.0 |" in text and text.splitlines()[-1].endswith("| CLIENT |")


def test_a_level_without_results_is_client_bound_not_a_pass() -> None:
    row = RunResult(5).row()
    assert row["client_bound"] and row["server_cpu_pct"] is None
    assert max_calls_ok([row]) is None


def test_refused_calls_are_counted_apart_from_failed_ones_and_fail_the_verdict() -> None:
    result = level(4, lag=1.0, jitter=2.0)
    result.results[0] = {"ok": False, "refused": True, "why": "refused at /voice"}
    result.results[1] = {"ok": False, "why": "no bot audio"}
    row = result.row()
    assert row["refused"] == 1 and row["failed"] == 1
    clean = level(3, lag=1.0, jitter=2.0)
    clean.results[0] = {"ok": False, "refused": True, "why": "refused at /voice"}
    only_refused = clean.row()
    assert only_refused["failed"] == 0 and only_refused["refused"] == 1
    assert max_calls_ok([only_refused]) is None  # a level that turned callers away did not hold
    assert "| refused |" in table([row])


def test_the_verdict_holds_the_issue_bars_for_clear_and_the_turn() -> None:
    one = level(1, lag=1.0, jitter=2.0).row()  # turn p95 300 ms, clear 150 ms
    slow_clear = level(20, lag=1.0, jitter=2.0).row()
    slow_clear["bargein_p95_ms"] = 230.0
    slow_turn = level(30, lag=1.0, jitter=2.0).row()
    slow_turn["turn_p95_ms"] = 351.0
    within = level(10, lag=1.0, jitter=2.0).row()
    within["turn_p95_ms"] = 349.0
    rows = [one, within, slow_clear, slow_turn]
    assert max_calls_ok(rows) == 10
    assert bars_missed(slow_clear, turn_limit(rows)) == ["clear"]
    assert bars_missed(slow_turn, turn_limit(rows)) == ["turn"]


def test_a_saturated_client_core_marks_the_level_client_bound() -> None:
    busy = level(10, lag=1.0, jitter=2.0)
    busy.client_cpu_pct = 95.0  # the callers and the vendor fakes share that core
    assert busy.row()["client_bound"]
    assert max_calls_ok([busy.row()]) is None
