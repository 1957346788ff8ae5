"""The dashboard's pure parts with plain data: sessions and CSRF, the live board's
phases (manual clock), the conversation's heard/unheard split, the waterfall."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request

from callbridge.clock import ManualClock
from callbridge.server.dashboard import views
from callbridge.server.dashboard.auth import (
    FAILURE_WINDOW_S,
    MAX_FAILURES,
    SESSION_COOKIE,
    SESSION_S,
    SessionKeeper,
    same_origin,
)
from callbridge.server.live_board import LiveBoard
from callbridge.store.models import Event, Turn

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def request(cookies: dict[str, str] | None = None, **headers: str) -> Request:
    raw = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
    if cookies:
        raw.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_a_session_is_signed_expires_and_is_revoked() -> None:
    token, clock = ["token-one-" + "a" * 22], Clock()
    keeper = SessionKeeper(lambda: token[0], clock=clock)
    session, cookie = keeper.mint()
    read = keeper.read(request({SESSION_COOKIE: cookie}))
    assert read == session and keeper.csrf_ok(session, session.csrf)
    assert not keeper.csrf_ok(session, "forged") and not keeper.csrf_ok(session, None)
    sid, expires, mac = cookie.split(".")
    for forged in (f"{sid}.{int(expires) + 999}.{mac}", f"x{sid}.{expires}.{mac}", sid, ""):
        assert keeper.read(request({SESSION_COOKIE: forged})) is None, forged
    other, _ = keeper.mint()
    assert other.csrf != session.csrf  # the CSRF token is the session's own
    token[0] = "token-two-" + "b" * 22  # a rotated API token logs everybody out
    assert keeper.read(request({SESSION_COOKIE: cookie})) is None
    token[0] = "token-one-" + "a" * 22
    keeper.revoke(session)
    assert keeper.read(request({SESSION_COOKIE: cookie})) is None
    _, fresh = keeper.mint()
    clock.t += SESSION_S + 1
    assert keeper.read(request({SESSION_COOKIE: fresh})) is None


def test_wrong_tokens_are_rationed() -> None:
    clock = Clock()
    keeper = SessionKeeper(lambda: "the-token-" + "c" * 22, clock=clock)
    for _ in range(MAX_FAILURES):
        assert not keeper.throttled()
        assert not keeper.check_token("guess")
    assert keeper.throttled()
    clock.t += FAILURE_WINDOW_S + 1
    assert not keeper.throttled() and keeper.check_token("the-token-" + "c" * 22)


def test_no_token_means_no_sessions() -> None:
    keeper = SessionKeeper(lambda: None)
    assert not keeper.enabled and not keeper.check_token("")
    assert keeper.mint()[0].csrf  # it can still mint, but read() accepts nothing
    assert keeper.read(request({SESSION_COOKIE: keeper.mint()[1]})) is None


def test_same_origin_refuses_other_sites() -> None:
    site = "https://calls.example.com"
    assert same_origin(request(origin=site, sec_fetch_site="same-origin"), site)
    assert same_origin(request(), site)  # no Origin (an old client): the CSRF token decides
    assert not same_origin(request(origin="https://evil.example"), site)
    assert not same_origin(request(origin="null"), site)
    assert not same_origin(request(origin=site, sec_fetch_site="cross-site"), site)


def test_the_live_board_reads_the_phase_off_the_times() -> None:
    clock = ManualClock(100.0)
    board = LiveBoard(clock)
    board.begin("CA1", from_number="+1555", to_number="+1666")
    assert [r.phase for r in board.rows()] == ["listening"]
    board.bot_audio("CA1")  # the greeting goes out
    clock.advance(0.1)
    assert board.rows()[0].phase == "speaking"
    board.barge_in("CA1")
    assert board.rows()[0].phase == "listening"  # the caller talks over it
    clock.advance(1.0)
    board.turn("CA1", "assistant", {"first_frame": 12.34})
    board.turn("CA1", "user", {})
    assert board.rows()[0].phase == "thinking"
    clock.advance(0.3)
    board.bot_audio("CA1")
    row = board.rows()[0]
    assert row.phase == "speaking" and row.last_latency_ms == 12.3 and row.turns == 2
    clock.advance(0.5)
    assert board.rows()[0].phase == "listening"  # nothing sent for a while
    assert board.rows()[0].as_json()["from"] == "+1555"
    board.end("CA1")
    assert board.rows() == [] and len(board) == 0


def turn(seq: int, role: str, text: str, **kw: Any) -> Turn:
    values: dict[str, Any] = {
        "call_sid": "CA1",
        "seq": seq,
        "role": role,
        "kind": "answer" if role == "assistant" else "",
        "text": text,
        "heard_text": None,
        "interrupted": False,
        "started_at": T0 + timedelta(seconds=seq),
        "ended_at": T0 + timedelta(seconds=seq + 1),
        "latency_ms": {},
        "first_frame_ms": None,
    }
    values.update(kw)
    return Turn(**values)


def test_the_conversation_splits_what_was_heard() -> None:
    turns = [
        turn(
            1,
            "assistant",
            "Hello there. Press 1 for billing.",
            heard_text="Hello there.",
            interrupted=True,
        ),
        turn(2, "user", "(pressed 1)"),
        turn(3, "assistant", "Billing.", heard_text="Billing."),
        turn(4, "assistant", "Gone entirely.", heard_text="", interrupted=True),
    ]
    bubbles = views.conversation(turns, T0)
    assert (bubbles[0].heard, bubbles[0].unheard) == ("Hello there.", "Press 1 for billing.")
    assert bubbles[0].offset_s == 1.0
    assert bubbles[1].dtmf == "1" and bubbles[0].dtmf is None
    assert (bubbles[2].heard, bubbles[2].unheard, bubbles[2].interrupted) == ("Billing.", "", False)
    assert (bubbles[3].heard, bubbles[3].unheard) == ("", "Gone entirely.")


def test_the_waterfall_keeps_the_stored_numbers_in_order() -> None:
    fall = views.waterfall(
        turn(
            3,
            "assistant",
            "x",
            latency_ms={
                "stt": 101.5,
                "first_audio": 190.0,
                "first_frame": 191.2,
                "speculated_ms": 4.0,
            },
        )
    )
    assert fall is not None
    measured = {s.label: s.at_ms for s in fall.stages if s.at_ms is not None}
    assert measured == {
        "endpoint": 0.0,
        "STT final": 101.5,
        "TTS first audio": 190.0,
        "first frame sent": 191.2,
    }
    first_frame = next(s for s in fall.stages if s.key == "first_frame")
    assert first_frame.start_ms == 190.0  # its bar starts where the previous one ended
    assert dict(fall.extra) == {"speculated_ms": 4.0}
    assert fall.span_ms == 191.2 and fall.left_pct(191.2) == 100.0
    assert views.waterfall(turn(2, "user", "hi")) is None


def test_the_timeline_places_and_names_events() -> None:
    events = [
        Event(
            call_sid="CA1",
            at=T0 + timedelta(seconds=2),
            kind="barge_in",
            data={"reaction_ms": 180, "reason": "speech"},
        ),
        Event(
            call_sid="CA1",
            at=T0 + timedelta(seconds=5),
            kind="provider_retry",
            data={"provider": "deepgram"},
        ),
        Event(call_sid="CA1", at=T0 + timedelta(seconds=10), kind="reply_failed", data={}),
    ]
    marks = views.timeline(events, T0, 10.0)
    assert [(m.category, m.left_pct) for m in marks] == [
        ("barge-in", 20.0),
        ("retry", 50.0),
        ("fault", 100.0),
    ]
    assert marks[0].detail.startswith("reaction 180 ms")
