"""The dashboard in a real browser (Chromium via Playwright) against the real server:
the engine with ``make serve``'s assistant, the store, recordings, simulated callers,
and a fake of Twilio's REST API (issue 15's "done when")."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from callbridge.simulator.scenario import parse_scenario
from callbridge.store.repository import CallDetail, get_call

from .conftest import AXE, log_in, screenshot_dir
from .stack import API_TOKEN, Stack

INTERRUPTED_CALL = parse_scenario(
    """\
name: dashboard-interrupted
timeout_s: 60
steps:
  - interrupt: {after_bot_speech_ms: 1500, say: "Hello? I need some help with my account."}
  - expect_clear: 1500
  - expect_bot_speech: 5000       # no speech recognizer: the bot asks for the keypad
  - pause: 1200
  - dtmf: "1"                     # …and is cut off by a key: billing
  - expect_clear: 1500
  - expect_bot_speech: 4000
  - pause: 1500
  - hangup
""",
    source="dashboard.yaml",
)


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {predicate}")
        time.sleep(0.05)


def stored(stack: Stack, sid: str) -> CallDetail | None:
    assert stack.store is not None
    return stack.run(get_call(stack.store.database, sid))


@pytest.fixture(scope="module")
def context(browser: Browser, stack: Stack) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1100, "height": 760}, base_url=stack.base_url)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def page(context: BrowserContext, stack: Stack) -> Page:
    """A logged-in page the module's tests share."""
    tab = context.new_page()
    log_in(tab, stack.base_url)
    expect(tab.get_by_role("heading", name="Live calls")).to_be_visible()
    return tab


@pytest.fixture(scope="module")
def finished_call(stack: Stack) -> CallDetail:
    """One call run to its end: a barge-in on the greeting, a key pressed over a reply."""
    options = stack.options()
    report = stack.scenario(INTERRUPTED_CALL, options).result(90)
    assert report.ok, report.failures
    detail = wait_for(
        lambda: (
            (d := stored(stack, options.call_sid))
            and d.call.ended_at is not None
            and d.recording is not None
            and d.recording.duration_ms
            and d
        ),
        15,
    )
    return detail


def test_pages_refuse_without_a_session(browser: Browser, stack: Stack) -> None:
    ctx = browser.new_context(base_url=stack.base_url)
    try:
        tab = ctx.new_page()
        for path in (
            "/dashboard/live",
            "/dashboard/calls",
            "/dashboard/overview",
            "/dashboard/calls/CA" + "0" * 32,
        ):
            tab.goto(path)
            assert tab.url.endswith("/dashboard/login"), path
            expect(tab.get_by_role("heading", name="Log in")).to_be_visible()
        sid = "CA" + "1" * 32
        assert ctx.request.get("/dashboard/live/events").status == 401
        assert ctx.request.get(f"/dashboard/calls/{sid}/recording").status == 401
        assert ctx.request.post(f"/dashboard/calls/{sid}/hangup", form={"csrf": "x"}).status == 401
    finally:
        ctx.close()


def test_log_in_sets_a_strict_httponly_cookie(browser: Browser, stack: Stack) -> None:
    ctx = browser.new_context(base_url=stack.base_url)
    try:
        tab = ctx.new_page()
        log_in(tab, stack.base_url, token="not-the-token-" + "x" * 20)
        expect(tab.get_by_role("alert")).to_have_text("Wrong token.")
        log_in(tab, stack.base_url)
        expect(tab.get_by_role("heading", name="Live calls")).to_be_visible()
        assert API_TOKEN not in tab.url
        (cookie,) = [c for c in ctx.cookies() if c["name"] == "cb_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert not cookie["secure"]  # plain http on 127.0.0.1; https would set it
        assert API_TOKEN not in cookie["value"]
        assert tab.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
    finally:
        ctx.close()


def test_live_calls_appear_and_leave(page: Page, stack: Stack, tmp_path: Path) -> None:
    page.goto("/dashboard/live")
    expect(page.locator("#live-table")).to_have_attribute("data-connected", "yes")
    page.evaluate("window.__sameDocument = true")
    release = threading.Event()
    options = stack.options(from_number="+15550107001")
    call = stack.submit(stack.held_call(options, release))
    try:
        row = page.locator(f'tr[data-sid="{options.call_sid}"]')
        expect(row).to_be_visible()
        expect(row.locator('[data-field="from"]')).to_have_text("+15550107001")
        expect(row.locator('[data-field="phase"]')).to_have_text(
            re.compile("^(listening|speaking|thinking)$")
        )
        expect(row.locator('[data-field="phase"]')).to_have_text("speaking")  # the greeting
        page.screenshot(path=str(screenshot_dir(tmp_path) / "live.png"))
    finally:
        release.set()
    assert call.result(30) == "caller"
    expect(page.locator(f'tr[data-sid="{options.call_sid}"]')).to_have_count(0)
    assert page.evaluate("window.__sameDocument") is True  # updated live, not reloaded


def test_hang_up_from_the_page(page: Page, stack: Stack) -> None:
    page.goto("/dashboard/live")
    expect(page.locator("#live-table")).to_have_attribute("data-connected", "yes")
    release = threading.Event()
    options = stack.options()
    call = stack.submit(stack.held_call(options, release))
    try:
        row = page.locator(f'tr[data-sid="{options.call_sid}"]')
        row.get_by_role("button", name="Hang up").click()
        expect(page.locator("#live-status")).to_have_text("hang-up: ended")
        # The live call was ended by its own engine (the same path as /api: goodbye,
        # then the REST hang-up), so the server closed the stream.
        assert call.result(30) == "server"
    finally:
        release.set()
    assert stack.api is not None
    ended = [r for r in stack.api.requests if options.call_sid in r.path]
    assert [r.form.get("Status") for r in ended] == [["completed"]]
    expect(page.locator(f'tr[data-sid="{options.call_sid}"]')).to_have_count(0)
    detail = wait_for(
        lambda: (
            (d := stored(stack, options.call_sid))
            and any(e.kind == "api_hangup" for e in d.events)
            and d.call.ended_at is not None
            and d
        )
    )
    assert detail.call.outcome == "goodbye"  # said the goodbye, then hung up


def test_transfer_from_the_page(page: Page, stack: Stack) -> None:
    page.goto("/dashboard/live")
    expect(page.locator("#live-table")).to_have_attribute("data-connected", "yes")
    release = threading.Event()
    options = stack.options()
    call = stack.submit(stack.held_call(options, release))
    try:
        row = page.locator(f'tr[data-sid="{options.call_sid}"]')
        row.get_by_label("Transfer").fill("+15550100999")
        row.get_by_role("button", name="Transfer").click()
        expect(page.locator("#live-status")).to_have_text("transferred to +15550100999")
    finally:
        release.set()
    call.result(30)
    assert stack.api is not None
    (redirect,) = [r for r in stack.api.requests if options.call_sid in r.path]
    assert "<Dial" in redirect.form["Twiml"][0] and "+15550100999" in redirect.form["Twiml"][0]


def test_a_forged_csrf_token_is_refused(page: Page, stack: Stack) -> None:
    sid = "CA" + "f" * 32
    assert stack.api is not None
    stack.api.add_call(sid)
    request = page.context.request
    origin = {"Origin": stack.base_url}
    for form in ({"csrf": "forged"}, {}):
        answer = request.post(f"/dashboard/calls/{sid}/hangup", form=form, headers=origin)
        assert answer.status == 403, form
        answer = request.post(
            f"/dashboard/calls/{sid}/transfer", form={**form, "to": "+15550100"}, headers=origin
        )
        assert answer.status == 403, form
    real = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert real
    cross_site = request.post(
        f"/dashboard/calls/{sid}/hangup",
        form={"csrf": real},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status == 403
    assert request.post("/dashboard/logout", form={"csrf": "forged"}).status == 403
    assert not [r for r in stack.api.requests if sid in r.path]  # Twilio never heard of it
    page.goto("/dashboard/live")
    expect(page.get_by_role("heading", name="Live calls")).to_be_visible()  # still logged in


def test_a_finished_call(
    page: Page, stack: Stack, finished_call: CallDetail, tmp_path: Path
) -> None:
    sid = finished_call.call.sid
    page.goto("/dashboard/calls")
    page.locator(f'tr[data-sid="{sid}"] a').click()
    expect(page.get_by_role("heading", name=f"Call {sid}")).to_be_visible()

    turns = finished_call.turns
    interrupted = [t for t in turns if t.interrupted and t.role == "assistant"]
    assert interrupted, "the scenario barges in on the bot"
    for turn in turns:
        bubble = page.locator(f'#conversation li[data-seq="{turn.seq}"]')
        if turn.interrupted:
            heard = (turn.heard_text or "").strip()
            expect(bubble.locator(".heard")).to_have_text(heard)
            unheard = turn.text[len(turn.heard_text or "") :].strip()
            if unheard:
                expect(bubble.locator("del.unheard")).to_have_text(unheard)
            expect(bubble.locator(".badge")).to_contain_text("interrupted")
        else:
            expect(bubble.locator(".heard")).to_have_text(turn.text.strip())
    assert any(t.heard_text and t.text[len(t.heard_text) :].strip() for t in interrupted), (
        "one reply was cut mid-way: some of it heard, some not"
    )
    expect(page.locator(".dtmf")).to_have_text(["DTMF 1"])

    measured = [t for t in turns if t.latency_ms]
    assert measured
    for turn in measured:
        table = page.locator(f'table.waterfall[data-seq="{turn.seq}"]')
        for key, value in turn.latency_ms.items():
            expect(table.locator(f'td[data-key="{key}"]')).to_have_text(f"{float(value):.1f}")

    barge = page.locator("#events-table tr", has_text="barge_in")
    expect(barge.first).to_contain_text("reaction")

    recording = finished_call.recording
    assert recording is not None and recording.duration_ms
    duration = page.wait_for_function(
        "() => { const p = document.getElementById('player'); "
        "return p.readyState >= 1 && p.duration > 0 ? p.duration : null; }"
    ).json_value()
    assert abs(duration - recording.duration_ms / 1000) < 0.1
    expect(page.locator("#waveform")).to_have_attribute("data-ready", "yes")
    target = page.locator("#conversation li").nth(2)
    offset = float(target.get_attribute("data-offset-s") or 0)
    assert offset > 0
    target.locator("button.seek").click()
    page.wait_for_function(
        f"() => Math.abs(document.getElementById('player').currentTime - {offset}) < 0.5"
    )
    expect(target).to_have_class(re.compile(r"\bcurrent\b"))
    page.evaluate("document.getElementById('player').pause()")
    page.screenshot(path=str(screenshot_dir(tmp_path) / "call.png"))


def test_calls_list_filters_and_sorts(
    page: Page, stack: Stack, finished_call: CallDetail, tmp_path: Path
) -> None:
    sid = finished_call.call.sid
    page.goto("/dashboard/calls?bargein=yes")
    expect(page.locator(f'tr[data-sid="{sid}"]')).to_have_count(1)
    page.goto("/dashboard/calls?bargein=no")
    expect(page.locator(f'tr[data-sid="{sid}"]')).to_have_count(0)
    page.goto("/dashboard/calls")
    page.get_by_role("link", name="Slowest turn (ms)").click()
    expect(page.locator("th[aria-sort]")).to_contain_text("Slowest turn")
    cells = page.locator('#calls-table [data-field="latency"]').all_inner_texts()
    measured = [float(c) for c in cells if c != "—"]
    assert measured and measured == sorted(measured, reverse=True)
    assert cells[: len(measured)] == [f"{v:.1f}" for v in measured]  # unmeasured go last
    slowest = max(t.first_frame_ms or 0 for t in finished_call.turns)
    row = page.locator(f'tr[data-sid="{sid}"]')
    expect(row.locator('[data-field="latency"]')).to_have_text(f"{slowest:.1f}")
    page.get_by_label("Number").fill(finished_call.call.from_number)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(f'tr[data-sid="{sid}"]')).to_have_count(1)
    page.goto("/dashboard/calls")
    page.screenshot(path=str(screenshot_dir(tmp_path) / "calls.png"))


def test_overview_draws_its_charts(page: Page, finished_call: CallDetail, tmp_path: Path) -> None:
    page.goto("/dashboard/overview")
    expect(page.locator('[data-drawn="yes"]')).to_have_count(3)
    assert int(page.locator("#total-calls").inner_text()) >= 1
    expect(page.locator("canvas")).to_have_count(3)
    page.screenshot(path=str(screenshot_dir(tmp_path) / "overview.png"))


def test_pages_have_no_serious_accessibility_violations(
    stack: Stack, finished_call: CallDetail, browser: Browser
) -> None:
    """axe-core in the same browser; the pages' CSP forbids injected scripts, so this
    context alone bypasses it to load axe."""
    found = {}
    ctx = browser.new_context(base_url=stack.base_url, bypass_csp=True)
    try:
        tab = ctx.new_page()
        tab.goto("/dashboard/login")
        found["/dashboard/login"] = _serious_violations(tab)
        log_in(tab, stack.base_url)
        expect(tab.get_by_role("heading", name="Live calls")).to_be_visible()
        for path in (
            "/dashboard/live",
            "/dashboard/calls",
            f"/dashboard/calls/{finished_call.call.sid}",
            "/dashboard/overview",
        ):
            tab.goto(path)
            found[path] = _serious_violations(tab)
    finally:
        ctx.close()
    assert found == {path: [] for path in found}


def test_log_out(browser: Browser, stack: Stack) -> None:
    ctx = browser.new_context(base_url=stack.base_url)
    try:
        tab = ctx.new_page()
        log_in(tab, stack.base_url)
        expect(tab.get_by_role("heading", name="Live calls")).to_be_visible()
        old = [c for c in ctx.cookies() if c["name"] == "cb_session"]
        tab.get_by_role("button", name="Log out").click()
        expect(tab.get_by_role("heading", name="Log in")).to_be_visible()
        tab.goto("/dashboard/live")
        assert tab.url.endswith("/dashboard/login")
        ctx.add_cookies(old)  # a copy of the old cookie: revoked
        tab.goto("/dashboard/calls")
        assert tab.url.endswith("/dashboard/login")
    finally:
        ctx.close()


def _serious_violations(tab: Page) -> list[str]:
    tab.add_script_tag(path=str(AXE))
    result = tab.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
