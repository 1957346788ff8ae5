"""Scenario files: a scripted caller and what it must experience, in YAML.

```yaml
name: barge-in
steps:
  - expect_bot_speech: 3000          # the greeting starts within 3 s
  - wait_for_silence                 # let it finish
  - say: I would like to check my bill
  - expect_bot_speech: 2000
  - interrupt: {after_bot_speech_ms: 1000, say: stop please}
  - expect_clear
  - max_bargein_ms: 600
  - hangup
limits: {max_turn_latency_ms: 2000}  # checked on every turn once the call ends
```

Each step is one key (its value may use a shorthand: a number or a string for the main
field) or a bare name for steps without arguments. Errors name the file, the line and
the field, because whoever reads them is editing that file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from callbridge.errors import ConfigError

__all__ = [
    "STEP_TYPES",
    "Dtmf",
    "ExpectBotSays",
    "ExpectBotSpeech",
    "ExpectClear",
    "ExpectHangup",
    "ExpectNoClear",
    "ExpectSilence",
    "Hangup",
    "Interrupt",
    "Limits",
    "MaxBargeinMs",
    "MaxTurnLatencyMs",
    "Pause",
    "Play",
    "Say",
    "Scenario",
    "Step",
    "WaitForBotSpeech",
    "WaitForSilence",
    "load_scenario",
    "parse_scenario",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Model):
    """Base of every step; ``shorthand`` names the field a bare value fills."""

    shorthand: ClassVar[str | None] = None
    line: int = Field(0, exclude=True)


class Say(Step):
    shorthand = "text"
    text: str = Field(min_length=1)
    voice: str = "en-us"


class Play(Step):
    """A WAV file (any rate), relative to the scenario file."""

    shorthand = "path"
    path: str = Field(min_length=1)


class Pause(Step):
    shorthand = "ms"
    ms: int = Field(ge=0, le=600_000)


class Dtmf(Step):
    shorthand = "digits"
    digits: str = Field(pattern=r"^[0-9*#A-Da-d]+$")
    gap_ms: int = Field(300, ge=0, le=10_000)


class Interrupt(Step):
    """Start talking (``say``) or make a sound (``play``, a WAV: a cough, a door) once
    the bot's current reply has played ``after_bot_speech_ms``."""

    after_bot_speech_ms: int = Field(ge=0, le=600_000)
    say: str | None = Field(None, min_length=1)
    play: str | None = Field(None, min_length=1)
    voice: str = "en-us"
    timeout_ms: int = Field(30_000, ge=0, le=600_000)

    @model_validator(mode="after")
    def _one_sound(self) -> Self:
        if (self.say is None) == (self.play is None):
            raise ValueError("give exactly one of 'say' and 'play'")
        return self


class Hangup(Step):
    pass


class WaitForBotSpeech(Step):
    shorthand = "timeout_ms"
    timeout_ms: int = Field(30_000, ge=0, le=600_000)


class WaitForSilence(Step):
    """Wait until no bot audio has played for ``ms``."""

    shorthand = "ms"
    ms: int = Field(1000, ge=0, le=600_000)
    timeout_ms: int = Field(60_000, ge=0, le=3_600_000)


class ExpectBotSpeech(Step):
    shorthand = "within_ms"
    within_ms: int = Field(ge=0, le=600_000)


class ExpectSilence(Step):
    shorthand = "for_ms"
    for_ms: int = Field(ge=0, le=600_000)


class MaxTurnLatencyMs(Step):
    """The latest caller turn was answered within this many ms."""

    shorthand = "ms"
    ms: int = Field(ge=0)


class MaxBargeinMs(Step):
    """The latest barge-in was answered with ``clear`` within this many ms."""

    shorthand = "ms"
    ms: int = Field(ge=0)


class ExpectHangup(Step):
    """The server ends the call within ``within_ms``."""

    shorthand = "within_ms"
    within_ms: int = Field(30_000, ge=0, le=3_600_000)


class ExpectClear(Step):
    """A ``clear`` arrived since the caller's latest turn began, or arrives within the window."""

    shorthand = "within_ms"
    within_ms: int = Field(2000, ge=0, le=600_000)


class ExpectNoClear(Step):
    """The bot was not stopped: no ``clear`` since the caller's latest sound began, nor
    within the window (a backchannel or a cough over the bot)."""

    shorthand = "for_ms"
    for_ms: int = Field(1500, ge=0, le=600_000)


class ExpectBotSays(Step):
    """A regex the bot's stored turns must match (checked via the call-records API)."""

    shorthand = "pattern"
    pattern: str = Field(min_length=1)


STEP_TYPES: dict[str, type[Step]] = {
    "say": Say,
    "play": Play,
    "pause": Pause,
    "dtmf": Dtmf,
    "interrupt": Interrupt,
    "hangup": Hangup,
    "wait_for_bot_speech": WaitForBotSpeech,
    "wait_for_silence": WaitForSilence,
    "expect_bot_speech": ExpectBotSpeech,
    "expect_silence": ExpectSilence,
    "max_turn_latency_ms": MaxTurnLatencyMs,
    "max_bargein_ms": MaxBargeinMs,
    "expect_hangup": ExpectHangup,
    "expect_clear": ExpectClear,
    "expect_no_clear": ExpectNoClear,
    "expect_bot_says": ExpectBotSays,
}


class Limits(_Model):
    """Checked on every turn of the call once it is over."""

    max_turn_latency_ms: int | None = Field(None, ge=0)
    max_bargein_ms: int | None = Field(None, ge=0)
    max_stale_ms: int | None = Field(None, ge=0)
    max_underruns: int | None = Field(None, ge=0)


class Scenario(_Model):
    name: str
    description: str = ""
    from_number: str = Field("+15005550006", alias="from")
    to_number: str = Field("+15005550001", alias="to")
    timeout_s: float = Field(120.0, gt=0, le=3600)
    limits: Limits = Field(default_factory=lambda: Limits.model_validate({}))
    steps: tuple[Step, ...] = Field(min_length=1)
    source: str = Field("<scenario>", exclude=True)


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read scenario {path}: {exc.strerror}") from exc
    return parse_scenario(text, source=str(path), default_name=path.stem)


def parse_scenario(text: str, *, source: str = "<scenario>", default_name: str = "") -> Scenario:
    """Validate a scenario; raise ``ConfigError`` whose lines read ``file:line: field: why``."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or root is None:
        raise ConfigError(f"{source}:1: expected a mapping with 'steps' at the top level")
    raw_steps = data.get("steps")
    steps_node = _child(root, "steps")
    if not isinstance(raw_steps, list) or not isinstance(steps_node, yaml.SequenceNode):
        line = steps_node.start_mark.line + 1 if steps_node is not None else 1
        raise ConfigError(f"{source}:{line}: steps: expected a list of steps")
    steps = [
        _parse_step(item, node, i, source)
        for i, (item, node) in enumerate(zip(raw_steps, steps_node.value, strict=True))
    ]
    fields = {**data, "steps": steps, "source": source}
    fields.setdefault("name", default_name or Path(source).stem)
    try:
        return Scenario.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, root, source)) from exc


def _parse_step(item: Any, node: yaml.Node, index: int, source: str) -> Step:
    line = node.start_mark.line + 1
    where = f"{source}:{line}: steps.{index}"
    if isinstance(item, str):
        name, value = item, None
    elif isinstance(item, dict) and len(item) == 1:
        ((name, value),) = item.items()
    else:
        raise ConfigError(f"{where}: expected one step name (e.g. 'say: hello'), got {item!r}")
    kind = STEP_TYPES.get(str(name))
    if kind is None:
        known = ", ".join(sorted(STEP_TYPES))
        raise ConfigError(f"{where}: unknown step {name!r}; expected one of {known}")
    if value is None:
        fields: dict[str, Any] = {}
    elif isinstance(value, dict):
        fields = dict(value)
    elif kind.shorthand is not None:
        fields = {kind.shorthand: value}
    else:
        raise ConfigError(f"{where}.{name}: takes no value, got {value!r}")
    value_node = node.value[0][1] if isinstance(node, yaml.MappingNode) else node
    # A missing field has no node of its own: point at the step.
    try:
        return kind.model_validate({**fields, "line": line})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(p) for p in error["loc"]]
            at = _child(value_node, loc[0]) if loc else None
            at_line = at.start_mark.line + 1 if at is not None else line
            dotted = ".".join([f"steps.{index}.{name}", *loc])
            problems.append(f"{source}:{at_line}: {dotted}: {error['msg']}")
        raise ConfigError("\n".join(problems)) from exc


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key:
                return value_node  # type: ignore[no-any-return]
    return None


def _describe(exc: ValidationError, root: yaml.Node, source: str) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        node: yaml.Node | None = root
        line = root.start_mark.line + 1
        for part in loc:
            child = _child(node, part)
            if child is None:
                break
            node, line = child, child.start_mark.line + 1
        lines.append(f"{source}:{line}: {'.'.join(loc) or '(top level)'}: {error['msg']}")
    return "\n".join(lines)
