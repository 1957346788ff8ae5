"""Load benchmark: N concurrent simulated calls against a server pinned to one core.

    .venv/bin/python bench/load.py                 # N = 10 50 100 200
    .venv/bin/python bench/load.py 10 50 --duration 30
    .venv/bin/python bench/load.py 100 --profile /tmp/prof   # py-spy the server (raw)

The callers are the lean ones (``callbridge.simulator.lean``) on the other core; the
server's CPU and RSS are taken over the steady window (every call up → the first one
ends); a row whose load generator lagged is marked CLIENT. Same as ``callbridge bench``;
the logic lives in ``callbridge.simulator.load``.
"""

from __future__ import annotations

import sys

from callbridge.simulator.load import main

if __name__ == "__main__":
    sys.exit(main())
