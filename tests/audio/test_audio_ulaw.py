"""μ-law must match audioop bit for bit: Twilio, Deepgram and ElevenLabs all use G.711."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio import ulaw

ALL_PCM16 = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))
NEG_ZERO, POS_ZERO = 0x7F, 0xFF  # both decode to 0; encode(0) is 0xFF


@pytest.fixture(scope="module")
def audioop() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip(
            "audioop", reason="audioop is gone (Python >= 3.13): no reference to compare with"
        )


def test_encode_matches_audioop_on_every_sample(audioop: ModuleType) -> None:
    expected = audioop.lin2ulaw(ALL_PCM16, 2)
    got = ulaw.encode(ALL_PCM16)
    assert len(got) == 65536
    mismatches = [i - 32768 for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    assert mismatches == []


def test_decode_matches_audioop_on_every_code(audioop: ModuleType) -> None:
    assert ulaw.decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_known_values() -> None:
    # Independent of audioop, so these still run on 3.13.
    assert ulaw.encode(b"\x00\x00") == b"\xff"
    assert ulaw.decode(b"\xff\x7f") == b"\x00\x00\x00\x00"
    assert np.frombuffer(ulaw.decode(b"\x00\x80"), "<i2").tolist() == [-32124, 32124]
    assert ulaw.encode(np.array([32767, -32768], "<i2").tobytes()) == b"\x80\x00"


def test_odd_length_pcm_is_rejected_with_reason() -> None:
    with pytest.raises(ValueError, match=r"even number of bytes.*got 3"):
        ulaw.encode(b"\x00\x01\x02")


def test_empty_in_empty_out() -> None:
    assert ulaw.encode(b"") == b""
    assert ulaw.decode(b"") == b""


def test_output_is_little_endian_bytes() -> None:
    assert isinstance(ulaw.decode(b"\x80"), bytes)
    assert ulaw.decode(b"\x80") == (32124).to_bytes(2, "little")


@given(st.binary(max_size=2000))
def test_encode_decode_round_trips_every_code(codes: bytes) -> None:
    # 0x7f ("negative zero") is the one code G.711 cannot give back: it decodes to 0,
    # and 0 encodes to 0xff.
    expected = codes.replace(bytes([NEG_ZERO]), bytes([POS_ZERO]))
    assert ulaw.encode(ulaw.decode(codes)) == expected


@given(st.lists(st.integers(-32768, 32767), max_size=500))
def test_decode_encode_error_stays_within_one_quantization_step(samples: list[int]) -> None:
    pcm = np.array(samples, dtype="<i2")
    back = np.frombuffer(ulaw.decode(ulaw.encode(pcm.tobytes())), "<i2").astype(np.int32)
    # The widest segment has a step of 1024 (plus clipping beyond ±32124 near full scale).
    err = np.abs(back - pcm.astype(np.int32))
    limit = np.where(np.abs(pcm.astype(np.int32)) > 32124, 1024 + 644, 1024)
    assert bool(np.all(err <= limit))


def test_src_never_imports_audioop() -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "callbridge"
    offenders = []
    for py in src.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "audioop" for n in names):
                offenders.append(str(py))
    assert offenders == []


def test_decoding_many_codes_at_once_is_decode_exactly() -> None:
    """``decode_codes`` (the metronome's, two codes a lookup when their count is even) is
    ``decode`` for every code in every position, odd counts and non-contiguous views too."""
    from callbridge.audio.ulaw import decode, decode_codes

    every_pair = np.array([(a, b) for a in range(256) for b in range(256)], np.uint8).ravel()
    assert decode_codes(every_pair).tobytes() == decode(every_pair.tobytes())
    odd = every_pair[1:160 * 3 + 2]
    assert decode_codes(odd).tobytes() == decode(odd.tobytes())
    strided = every_pair[::3][:320]
    assert decode_codes(strided).tobytes() == decode(strided.tobytes())
    assert decode_codes(np.zeros(0, np.uint8)).tobytes() == b""
