"""Install the Smart Turn v3.2 end-of-turn model (BSD-2-Clause, by Daily/Pipecat).

The ONNX file ships inside the ``pipecat-ai`` wheel on the package registry. This
downloads that one wheel (``pip download --no-deps``, nothing installed, pipecat never
imported), takes the one file out of it, checks it against the pinned SHA-256 and puts
it where callbridge looks: ``<venv>/share/callbridge/smart-turn-v3.2-cpu.onnx``.

    python scripts/fetch_smart_turn.py          # idempotent; run by `make`
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "pipecat-ai==1.14.0"
MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
TARGET = Path(sys.prefix) / "share" / "callbridge" / "smart-turn-v3.2-cpu.onnx"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    if TARGET.exists() and _sha256(TARGET) == SHA256:
        print(f"smart-turn: {TARGET} is in place")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    if hashlib.sha256(data).hexdigest() != SHA256:
        print(f"smart-turn: {MEMBER} in {WHEEL} does not match the pinned SHA-256",
              file=sys.stderr)
        return 1
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    partial = TARGET.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(TARGET)
    print(f"smart-turn: installed {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
