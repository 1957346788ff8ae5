"""Hang-up and transfer through the SDK against a local fake of Twilio's REST API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from support.twilio_api import FakeTwilioApi, fake_twilio_api

from callbridge.twilio import twiml
from callbridge.twilio.rest import TwilioRest, TwilioRestError

ACCOUNT = "AC" + "f" * 32
TOKEN = "t" * 32
CALL = "CA" + "1" * 32


@pytest.fixture
def api() -> Iterator[FakeTwilioApi]:
    with fake_twilio_api(ACCOUNT, TOKEN) as api:
        yield api


@pytest.fixture
def rest(api: FakeTwilioApi, monkeypatch: pytest.MonkeyPatch) -> TwilioRest:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")  # must not redirect us off the fake
    return TwilioRest(ACCOUNT, TOKEN, base_url=api.base_url)


async def test_end_call_completes_a_live_call(api: FakeTwilioApi, rest: TwilioRest) -> None:
    api.add_call(CALL)
    assert await rest.end_call(CALL) is True
    assert api.calls[CALL] == "completed"
    [req] = api.requests
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
    assert req.form == {"Status": ["completed"]}


async def test_call_already_over_is_success(api: FakeTwilioApi, rest: TwilioRest) -> None:
    assert await rest.end_call(CALL) is False  # 20404
    assert len(api.requests) == 1


async def test_other_errors_raise_with_twilios_code(api: FakeTwilioApi) -> None:
    bad_auth = TwilioRest(ACCOUNT, "wrong" * 8, base_url=api.base_url)
    api.add_call(CALL)
    with pytest.raises(TwilioRestError) as err:
        await bad_auth.end_call(CALL)
    assert (err.value.status, err.value.code) == (401, 20003)
    assert api.calls[CALL] == "in-progress"


async def test_server_error_raises(api: FakeTwilioApi, rest: TwilioRest) -> None:
    api.add_call(CALL)
    api.fail_with = (503, 20500)
    with pytest.raises(TwilioRestError, match="20500"):
        await rest.end_call(CALL)


async def test_unreachable_api_raises_our_error() -> None:
    with fake_twilio_api(ACCOUNT, TOKEN) as gone:
        url = gone.base_url
    rest = TwilioRest(ACCOUNT, TOKEN, base_url=url, timeout_s=2)
    with pytest.raises(TwilioRestError):
        await rest.end_call(CALL)


async def test_transfer_sends_dial_twiml(api: FakeTwilioApi, rest: TwilioRest) -> None:
    api.add_call(CALL)
    await rest.transfer_call(CALL, twiml.dial("+15550009999"))
    [req] = api.requests
    assert "<Dial>+15550009999</Dial>" in req.form["Twiml"][0]
    with pytest.raises(TwilioRestError):
        await rest.transfer_call("CA" + "2" * 32, twiml.dial("+15550009999"))


async def test_rest_runs_off_the_event_loop(api: FakeTwilioApi, rest: TwilioRest) -> None:
    """The fake holds its answer until the event loop releases it: a blocking client
    would deadlock here (and fail once the fake gives up), an off-loop one does not."""
    api.add_call(CALL)
    release = threading.Event()
    arrived = asyncio.Event()
    loop = asyncio.get_running_loop()

    def gate() -> None:
        loop.call_soon_threadsafe(arrived.set)
        assert release.wait(timeout=5), "the event loop was blocked by the REST call"

    api.before_answer = gate
    task = asyncio.create_task(rest.end_call(CALL))
    await arrived.wait()  # only reachable if the loop still runs while the request waits
    release.set()
    assert await task is True
