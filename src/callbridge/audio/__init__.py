"""Audio helpers for the 8 kHz phone line: μ-law, framing, resampling, WAV, levels.

Submodules are imported explicitly (``from callbridge.audio import ulaw``) so that
importing the package does not pull in soxr for code that only needs μ-law.
"""

__all__ = ["frames", "levels", "resample", "ulaw", "wav"]
