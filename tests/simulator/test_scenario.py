"""Scenario files: shorthands, defaults, and errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbridge.errors import ConfigError
from callbridge.simulator.scenario import (
    Dtmf,
    ExpectBotSpeech,
    ExpectClear,
    ExpectNoClear,
    Hangup,
    Interrupt,
    Pause,
    Say,
    WaitForSilence,
    load_scenario,
    parse_scenario,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"

GOOD = """\
name: barge-in
from: "+15551230000"
steps:
  - expect_bot_speech: 3000
  - wait_for_silence
  - say: I would like to check my bill
  - dtmf: {digits: "12#", gap_ms: 100}
  - pause: 250
  - interrupt: {after_bot_speech_ms: 1500, say: stop please}
  - expect_clear
  - hangup
limits:
  max_turn_latency_ms: 2000
"""


def test_parses_steps_with_shorthands_and_lines() -> None:
    s = parse_scenario(GOOD, source="x.yaml")
    assert s.name == "barge-in" and s.from_number == "+15551230000"
    kinds = [type(step) for step in s.steps]
    assert kinds == [
        ExpectBotSpeech,
        WaitForSilence,
        Say,
        Dtmf,
        Pause,
        Interrupt,
        ExpectClear,
        Hangup,
    ]
    assert s.steps[0] == ExpectBotSpeech(within_ms=3000, line=4)
    assert s.steps[1] == WaitForSilence(ms=1000, timeout_ms=60_000, line=5)
    assert s.steps[2] == Say(text="I would like to check my bill", line=6)
    assert s.steps[3] == Dtmf(digits="12#", gap_ms=100, line=7)
    assert s.steps[5] == Interrupt(after_bot_speech_ms=1500, say="stop please", line=9)
    assert s.steps[6] == ExpectClear(within_ms=2000, line=10)
    assert s.limits.max_turn_latency_ms == 2000


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "greeting.yaml"
    path.write_text("steps:\n  - hangup\n")
    assert load_scenario(path).name == "greeting"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps:\n  - say: hi\n  - shout: hi\n", "s.yaml:3: steps.1: unknown step 'shout'"),
        ("steps:\n  - pause: -5\n", "s.yaml:2: steps.0.pause.ms: Input should be greater"),
        (
            "steps:\n  - dtmf:\n      digits: '1x'\n",
            "s.yaml:3: steps.0.dtmf.digits: String should match pattern",
        ),
        (
            "steps:\n  - interrupt:\n      say: stop\n",
            "s.yaml:2: steps.0.interrupt.after_bot_speech_ms: Field required",
        ),
        (
            "steps:\n  - interrupt: {after_bot_speech_ms: 10, say: x, typo: 1}\n",
            "steps.0.interrupt.typo: Extra inputs are not permitted",
        ),
        ("steps:\n  - hangup: now\n", "s.yaml:2: steps.0.hangup: takes no value"),
        ("steps:\n  - {say: a, pause: 1}\n", "s.yaml:2: steps.0: expected one step name"),
        ("name: x\nsteps: hello\n", "s.yaml:2: steps: expected a list"),
        ("steps:\n  - hangup\ntimeout_s: 0\n", "s.yaml:3: timeout_s: Input should be greater"),
        ("steps:\n  - hangup\nlimits: {max_bargein_ms: x}\n", "s.yaml:3: limits.max_bargein_ms"),
        ("steps: [\n", "s.yaml: not valid YAML"),
        ("- say: hi\n", "s.yaml:1: expected a mapping"),
    ],
)
def test_errors_name_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_scenario(text, source="s.yaml")
    assert expected in str(info.value)


def test_empty_steps_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"s.yaml:1: steps: Tuple should have at least 1"):
        parse_scenario("steps: []\n", source="s.yaml")


def test_the_shipped_examples_parse() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        assert load_scenario(path).steps


def test_interrupt_makes_a_sound_or_says_words_but_not_both() -> None:
    wav = "name: x\nsteps:\n  - interrupt: {after_bot_speech_ms: 500, play: door.wav}\n"
    (step,) = parse_scenario(wav).steps
    assert isinstance(step, Interrupt) and step.play == "door.wav" and step.say is None
    for bad in ("{after_bot_speech_ms: 5}", "{after_bot_speech_ms: 5, say: hi, play: a.wav}"):
        with pytest.raises(ConfigError, match="exactly one"):
            parse_scenario(f"name: x\nsteps:\n  - interrupt: {bad}\n")


def test_expect_no_clear_takes_a_window() -> None:
    (step,) = parse_scenario("name: x\nsteps:\n  - expect_no_clear: 900\n").steps
    assert step == ExpectNoClear(for_ms=900, line=3)
