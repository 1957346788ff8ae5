from __future__ import annotations

import pytest

from providers_cloud.helpers import RecordingSleep


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()
