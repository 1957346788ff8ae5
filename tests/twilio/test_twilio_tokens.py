"""Stream tokens: bound to one CallSid, short-lived, unforgeable without the secret."""

from __future__ import annotations

import pytest

from callbridge.clock import ManualClock
from callbridge.twilio.tokens import DEFAULT_TTL_S, SpentTokens, StreamTokenError, StreamTokens

SECRET = "s" * 32
CALL = "CA" + "a" * 32


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture
def tokens(clock: ManualClock) -> StreamTokens:
    return StreamTokens(SECRET, now=clock.now)


def test_a_fresh_token_verifies_for_its_call(tokens: StreamTokens, clock: ManualClock) -> None:
    claims = tokens.verify(tokens.mint(CALL), CALL)
    assert claims.call_sid == CALL
    assert claims.expires_at == int(clock.now()) + DEFAULT_TTL_S
    assert claims.assistant is None


def test_assistant_name_round_trips(tokens: StreamTokens) -> None:
    assert tokens.verify(tokens.mint(CALL, "sales.v2 ☎"), CALL).assistant == "sales.v2 ☎"


def test_expires_after_ttl(tokens: StreamTokens, clock: ManualClock) -> None:
    token = tokens.mint(CALL)
    clock.advance(DEFAULT_TTL_S - 1)
    tokens.verify(token, CALL)
    clock.advance(1)
    with pytest.raises(StreamTokenError, match="expired"):
        tokens.verify(token, CALL)


def test_bound_to_the_call(tokens: StreamTokens) -> None:
    with pytest.raises(StreamTokenError, match="does not match"):
        tokens.verify(tokens.mint(CALL), "CA" + "b" * 32)


def test_another_secret_cannot_mint(clock: ManualClock, tokens: StreamTokens) -> None:
    forged = StreamTokens("x" * 32, now=clock.now).mint(CALL)
    with pytest.raises(StreamTokenError):
        tokens.verify(forged, CALL)


def test_tampering_is_detected(tokens: StreamTokens) -> None:
    version, expiry, name, sig = tokens.mint(CALL).split(".")
    later = str(int(expiry) + 3600)
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    for bad in (
        f"{version}.{later}.{name}.{sig}",  # extended expiry
        f"{version}.{expiry}.YWRtaW4.{sig}",  # swapped assistant
        f"{version}.{expiry}.{name}.{flipped}",
    ):
        with pytest.raises(StreamTokenError):
            tokens.verify(bad, CALL)


@pytest.mark.parametrize(
    "bad", ["", "v1", "v2.1.x.y", "v1.abc..sig", "v1.1..", "v1.-5..x", "v1.1..é"]
)
def test_malformed_tokens_are_rejected(tokens: StreamTokens, bad: str) -> None:
    with pytest.raises(StreamTokenError):
        tokens.verify(bad, CALL)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        StreamTokens("short")


def test_a_token_is_spent_once_and_forgotten_when_it_expires(
    tokens: StreamTokens, clock: ManualClock
) -> None:
    spent = SpentTokens(now=clock.now)
    token = tokens.mint(CALL)
    first = tokens.verify(token, CALL)
    assert spent.spend(first) is None
    assert spent.spend(tokens.verify(token, CALL)) == "stream token already used"
    clock.advance(1)
    other = tokens.verify(tokens.mint(CALL), CALL)  # minted a second later: another token
    assert other.token_id != first.token_id
    assert spent.spend(other) is None
    assert len(spent) == 2
    clock.advance(DEFAULT_TTL_S)  # both expired: verify refuses them, so the set lets go
    with pytest.raises(StreamTokenError, match="expired"):
        tokens.verify(token, CALL)
    fresh = "CA" + "b" * 32
    assert spent.spend(tokens.verify(tokens.mint(fresh), fresh)) is None
    assert len(spent) == 1


def test_spent_tokens_are_bounded(tokens: StreamTokens, clock: ManualClock) -> None:
    spent = SpentTokens(now=clock.now, limit=3)
    claims = [tokens.verify(tokens.mint(f"CA{i:032x}"), f"CA{i:032x}") for i in range(4)]
    verdicts = [spent.spend(c) for c in claims]
    assert verdicts == [None, None, None, "too many stream tokens in flight"]
    clock.advance(DEFAULT_TTL_S)
    assert spent.spend(claims[3]) is None and len(spent) == 1
