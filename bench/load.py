"""Load benchmark: N concurrent simulated calls against a server pinned to one core.

    .venv/bin/python bench/load.py                 # N = 10 50 100 200
    .venv/bin/python bench/load.py 10 50 --duration 30
    .venv/bin/python bench/load.py 100 --profile /tmp/prof   # py-spy the server (raw)
    .venv/bin/python bench/load.py 50 --stack seed # Silero + Deepgram/OpenAI/ElevenLabs

The callers are the lean ones (``callbridge.simulator.lean``) on the other core; the
server's CPU and RSS are taken over the steady window (every call up → the first one
ends); a row whose load generator lagged is marked CLIENT. Same as ``callbridge bench``;
the logic lives in ``callbridge.simulator.load``.

``--stack seed`` serves ``examples/assistant-seed.yaml`` (Silero VAD and the production
Deepgram, OpenAI and ElevenLabs clients) against the wire-level fakes of ``tests/fakes``,
which ``bench/seed_fakes.py`` runs in a process of their own on the client core: their
CPU is not counted as the server's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from callbridge.simulator.load import CLIENT_CORE, main

ROOT = Path(__file__).resolve().parents[1]


def seed_stack(argv: list[str]) -> int:
    """Start the vendor fakes, point the server's clients at them, run the benchmark."""
    cmd = ["taskset", "-c", str(CLIENT_CORE), sys.executable, str(ROOT / "bench/seed_fakes.py")]
    fakes = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert fakes.stdout is not None
        line = fakes.stdout.readline()
        if not line:
            print("the vendor fakes did not start", file=sys.stderr)
            return 1
        os.environ.update(json.loads(line))  # the server inherits the parent's environment
        assistant = ["--assistant", str(ROOT / "examples/assistant-seed.yaml")]
        # The fakes share the client core: their CPU is the client's, not the server's.
        return main(argv + assistant + ["--client-pid", str(fakes.pid)])
    finally:
        assert fakes.stdin is not None
        fakes.stdin.close()
        try:
            fakes.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fakes.kill()
            fakes.wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--stack" in args:
        at = args.index("--stack")
        stack = args[at + 1] if at + 1 < len(args) else ""
        del args[at : at + 2]
        if stack == "seed":
            sys.exit(seed_stack(args))
        if stack != "fake":
            sys.exit(f"--stack: expected 'fake' or 'seed', got {stack!r}")
    sys.exit(main(args))
