"""Where the server's core goes, by part of a call: py-spy's collapsed stacks summed.

    .venv/bin/python bench/load.py 80 --stack seed --profile /tmp/prof
    .venv/bin/python bench/profile_shares.py /tmp/prof/server-80.txt [--top 8] [--cpu 84]

Each sample is charged to the first part whose frame is anywhere on its stack, in the
order of ``PARTS`` (the model's run before the beat that calls it, the vendor clients
before the owner that drives them), and within a part to its deepest callbridge frame.
Samples of idle worker threads (aiosqlite's, the executor's) and of the loop waiting are
left out, so shares are of the busy samples. With ``--cpu`` (the server's CPU % over the
same run, as ``bench/load.py`` prints it) and the call count from the file name, it also
prints each part in µs of CPU per call-second, which is what a budget for N calls per
core is written in: 200 calls within 90 % of a core leave 4 500 µs a call-second.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Silero's run", ("Session.run (onnxruntime",)),
    ("the metronome's beat", ("Metronome._beat",)),
    ("inbound media", ("FrameSplitter.feed", "MediaSocket.data_received", "MediaStream.on_text")),
    ("OpenAI client", ("OpenAIChat", "StreamingPost", "http_stream", "h11_body", "llm/pool.py")),
    ("ElevenLabs client", ("ElevenLabs",)),
    ("Deepgram client", ("Deepgram", "SttLink")),
    ("the store", ("sqlalchemy", "callbridge/store")),
    ("the calls' owners", ("Shell.loop", "CallSession")),
)
_IDLE = re.compile(
    r"(_connection_worker_thread|_worker \(concurrent|Runner.run \(asyncio/runners.py\))"
)
_LINE = re.compile(r":\d+\)")


def shares(path: Path) -> tuple[int, Counter[str], dict[str, Counter[str]]]:
    total = 0
    parts: Counter[str] = Counter()
    frames: dict[str, Counter[str]] = defaultdict(Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        stack_frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        if _IDLE.match(stack_frames[-1]):
            continue
        total += n
        part = next(
            (name for name, keys in PARTS if any(k in f for k in keys for f in stack_frames)),
            "the rest (loop, replies, tasks)",
        )
        parts[part] += n
        ours = [f for f in stack_frames if "callbridge/" in f]
        frames[part][ours[-1] if ours else stack_frames[-1]] += n
    return total, parts, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy's collapsed stacks (server-N.txt)")
    parser.add_argument("--top", type=int, default=6, help="frames listed under each part")
    parser.add_argument("--cpu", type=float, help="the server's CPU %% over the run")
    args = parser.parse_args()
    total, parts, frames = shares(args.profile)
    calls = re.search(r"(\d+)", args.profile.stem)
    per_call_s = (
        args.cpu / 100 * 1e6 / int(calls.group(1)) if args.cpu and calls else None
    )
    print(f"{total} busy samples")
    for part, n in parts.most_common():
        share = n / total
        cost = f"  {share * per_call_s:6.0f} µs per call-second" if per_call_s else ""
        print(f"{100 * share:5.1f} %  {part}{cost}")
        for frame, m in frames[part].most_common(args.top):
            print(f"           {100 * m / total:5.1f} %  {frame}")


if __name__ == "__main__":
    main()
