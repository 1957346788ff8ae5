"""The ``silero`` VAD provider: its config block, and which model it builds.

The model and its per-call streams are in ``silero_model.py``; ``silero_batch.py`` builds
on them to run every call's windows together. Both are imported here, and neither imports
this module, so the arrows run one way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from callbridge.providers.registry import ProviderBlock, ProviderSpec
from callbridge.providers.vad.silero_batch import BatchedSileroModel
from callbridge.providers.vad.silero_model import SileroModel

__all__ = ["SPEC", "SileroBlock"]


class SileroBlock(ProviderBlock):
    """``vad: {provider: silero, threshold: 0.5}``."""

    provider: Literal["silero"] = "silero"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    batch: bool = True  # share model runs across calls (silero_batch.py); False: one per call


def _build(block: SileroBlock, env: Mapping[str, str]) -> SileroModel | BatchedSileroModel:
    if not block.batch:
        return SileroModel(block.threshold)
    return BatchedSileroModel(block.threshold)


SPEC = ProviderSpec(kind="vad", name="silero", config=SileroBlock, build=_build)
