"""The seed stack's vendors for a benchmark: Deepgram, OpenAI chat and ElevenLabs fakes.

    .venv/bin/python bench/seed_fakes.py      # prints one JSON line of env, runs until EOF

They are the wire-level fakes of ``tests/fakes`` (real WebSocket and HTTP on 127.0.0.1),
so the server's production clients are what a load run measures. They run in their own
process, started by ``bench/load.py --stack seed`` on the client core, so their CPU is
not the server's. The first line on stdout is the environment the server needs (keys and
base URLs); the process ends when its stdin closes.

Timing: Deepgram ends an utterance after 300 ms of silence (the seed's ``endpointing:
300``), the model answers after 150 ms in a few chunks and ElevenLabs sends its first
audio 100 ms after a flush (40 ms of audio a character). Realistic vendor timing is
``bench/latency.py``'s business; here the delays only need to be fixed, so that the
server's share is what changes.

Cost: they share the client core with the callers, and at 200 calls take ~5000 Deepgram
messages a second. So they run on uvloop, with start-up's objects frozen out of the
collector, and each on its lean variant, the same wire protocol for a fraction of the CPU:
Deepgram and ElevenLabs on ``_lean_ws`` (frames parsed in ``data_received``; Deepgram takes
audio that answers nothing without a coroutine, ElevenLabs makes each reply's audio
messages once), OpenAI on a plain asyncio HTTP/1.1 server (``openai_lean``: no ASGI, each
reply's chunks encoded once). Their tests re-run on the lean variants
(``tests/simulator/test_bench_fakes_lean.py``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.deepgram import FakeDeepgram
from fakes.elevenlabs import FakeElevenLabs
from fakes.openai_lean import LeanOpenAI
from fakes.script import Reply

HEARD = ("Hello, I would like to check my bill please.", "Wait, stop, I have another question.")
ANSWER = (  # about 3 s of speech: long enough for the caller's barge-in at 0.8 s
    "Sure, I can help with your bill. ",
    "Your last invoice was forty two dollars. ",
)


async def serve() -> None:
    # Each connection replays the script in order: enough for any benchmark call.
    transcripts = list(HEARD) * 500
    async with (
        FakeDeepgram(transcripts, endpointing_frames=15, idle_timeout_s=60.0,
                     lean_socket=True) as deepgram,
        LeanOpenAI(default=Reply(text=ANSWER, first_token_delay_s=0.15,
                                 chunk_delay_s=0.01)) as openai,
        FakeElevenLabs(ms_per_char=40, chunk_ms=100, first_audio_delay_s=0.1,
                       inactivity_timeout_s=60.0, lean_socket=True) as elevenlabs,
    ):
        env = {
            "DEEPGRAM_API_KEY": deepgram.api_key,
            "DEEPGRAM_BASE_URL": deepgram.base_url,
            "OPENAI_API_KEY": "test-openai-key",
            "OPENAI_BASE_URL": openai.base_url,
            "ELEVENLABS_API_KEY": elevenlabs.api_key,
            "ELEVENLABS_BASE_URL": elevenlabs.base_url,
        }
        gc.freeze()  # what start-up made stays out of every later collection
        print(json.dumps(env), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the cheaper loop
        runner.run(serve())
