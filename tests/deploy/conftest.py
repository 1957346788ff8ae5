"""Fixtures for the deploy tests: Twilio's REST fake, and a throwaway PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.twilio_api import FakeTwilioApi, fake_twilio_api

from .procs import ACCOUNT_SID, AUTH_TOKEN


@pytest.fixture
def twilio_api() -> Iterator[FakeTwilioApi]:
    with fake_twilio_api(ACCOUNT_SID, AUTH_TOKEN) as api:
        yield api


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The test PostgreSQL server (``scripts/test-postgres.sh``), or a skip saying why."""
    from store.pg import NoPostgres, postgres_server

    try:
        with postgres_server() as url:
            yield url
    except NoPostgres as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "deploy: real server processes, signals and PostgreSQL (-m 'not deploy' skips)"
    )
