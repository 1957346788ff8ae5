"""Load benchmark: N concurrent simulated calls against a server pinned to one core.

    .venv/bin/python bench/load.py                 # N = 10 50 100 200
    .venv/bin/python bench/load.py 10 50 --duration 30

Same as ``callbridge bench``; the logic lives in ``callbridge.simulator.load``.
"""

from __future__ import annotations

import sys

from callbridge.simulator.load import main

if __name__ == "__main__":
    sys.exit(main())
