"""Helpers shared by the local-provider tests."""

from __future__ import annotations

PCM_FRAME_BYTES = 320


def frames(pcm16: bytes) -> list[bytes]:
    """Whole 20 ms frames of 8 kHz PCM16 (a ragged tail is dropped)."""
    return [
        pcm16[i : i + PCM_FRAME_BYTES]
        for i in range(0, len(pcm16) - PCM_FRAME_BYTES + 1, PCM_FRAME_BYTES)
    ]
