"""Builds the voice agent a server runs: the assistant file, its providers (loaded once,
at start-up) and the engine's call runner."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from callbridge.assistant import build_assistant, load_assistant
from callbridge.engine.runner import make_runner
from callbridge.engine.transport import CallRunner
from callbridge.providers.registry import build_provider, spec_for

__all__ = ["agent_env", "build_runner"]


def agent_env(env_file: Path = Path(".env")) -> dict[str, str]:
    """Provider keys and URLs: the process environment wins over ``.env``."""
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    values.update(os.environ)
    return values


def build_runner(assistant_path: Path, env: Mapping[str, str] | None = None) -> CallRunner:
    env = agent_env() if env is None else env
    assistant = build_assistant(load_assistant(assistant_path), env)
    # The apology after a provider failure must not depend on the provider that failed.
    espeak = spec_for("tts", "espeak")
    fallback = build_provider("tts", espeak.config.model_validate({"provider": "espeak"}), env)
    return make_runner(assistant, fallback_tts=fallback)
