"""The vendors for ``bench/latency.py``: the wire-level fakes of tests/fakes with the
timing of the real services, in their own process (pinned off the server's core).

    python bench/latency_fakes.py TRANSCRIPT [TRANSCRIPT ...]

Prints one JSON line with the environment that points the seed assistant at them, then
serves until stdin closes; on exit prints one JSON line of counts (connections opened,
LLM requests). Timing (DESIGN.md §9, issue 12): Deepgram's final ``endpointing`` ms of
silence + 100 ms after speech, ``Finalize`` answered in 100 ms, interims every 200 ms;
LLM first token 80 ms; TTS first audio 60 ms; every NEW connection 150 ms
(``--connection-ms``), keep-alive reuse free. The transcripts cycle, one per utterance.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.deepgram import FakeDeepgram
from fakes.elevenlabs import FakeElevenLabs
from fakes.openai_chat import FakeOpenAI
from fakes.script import Reply

ANSWER = ("Sure, let me check that for you. ", "Your balance is forty two dollars.")
STT_FINAL_S = 0.100
LLM_FIRST_TOKEN_S = 0.080
TTS_FIRST_AUDIO_S = 0.060


async def serve(transcripts: list[str], connection_s: float) -> None:
    reply = Reply(text=ANSWER, first_token_delay_s=LLM_FIRST_TOKEN_S, chunk_delay_s=0.01)
    async with (
        FakeDeepgram(
            transcripts, cycle=True, endpointing_from_request=True, final_latency_s=STT_FINAL_S,
            interim_every_frames=10, idle_timeout_s=60.0, new_connection_s=connection_s,
        ) as deepgram,
        FakeOpenAI([reply], new_connection_s=connection_s) as openai,
        FakeElevenLabs(
            ms_per_char=40, first_audio_delay_s=TTS_FIRST_AUDIO_S, new_connection_s=connection_s,
        ) as elevenlabs,
    ):
        env = {
            "DEEPGRAM_API_KEY": deepgram.api_key, "DEEPGRAM_BASE_URL": deepgram.base_url,
            "OPENAI_API_KEY": "test-openai-key", "OPENAI_BASE_URL": openai.base_url,
            "ELEVENLABS_API_KEY": elevenlabs.api_key, "ELEVENLABS_BASE_URL": elevenlabs.base_url,
        }
        print(json.dumps(env), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it
        counts = {
            "deepgram_connections": len(deepgram.sessions),
            "openai_connections": openai.link.connections if openai.link else None,
            "elevenlabs_sockets": elevenlabs.connections,
        }
        counts["llm_requests"] = len(openai.requests)
        print(json.dumps(counts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("transcripts", nargs="+")
    parser.add_argument("--connection-ms", type=float, default=150.0)
    parser.add_argument("--core", type=int, default=None)
    args = parser.parse_args()
    if args.core is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {args.core})
    asyncio.run(serve(args.transcripts, args.connection_ms / 1000))


if __name__ == "__main__":
    main()
