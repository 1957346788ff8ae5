"""What the Smart Turn end-of-turn model costs: one judgment, and batches as many calls
would ask at once (one run per silence onset per call).

    .venv/bin/python bench/smart_turn.py
"""

from __future__ import annotations

import statistics
import sys
import time

from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.turn.smart_turn import load_smart_turn

TURN = "I would like to check the balance on my account please."


def main() -> int:
    model = load_smart_turn()
    if model is None:
        print("no model file: run `python scripts/fetch_smart_turn.py` (make does)")
        return 1
    pcm = synthesize_pcm(TURN, 8000)
    model.predict([pcm])  # first run allocates
    for batch in (1, 4, 16):
        times = []
        for _ in range(5):
            start = time.perf_counter()
            model.predict([pcm] * batch)
            times.append((time.perf_counter() - start) * 1000)
        per = statistics.median(times) / batch
        print(f"batch {batch:>2}: {statistics.median(times):7.1f} ms a run, "
              f"{per:6.1f} ms of one core per judgment")
    print("a call asks once per silence onset: at one turn every 5 s, a judgment of "
          "J ms costs J/50 % of a core per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
