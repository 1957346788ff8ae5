"""This folder cannot be a package (``twilio`` would shadow the SDK), so put the tests
root on the path ourselves for the shared helpers in ``tests/support``."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
