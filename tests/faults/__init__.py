"""Fault injection on the seed stack (issue 10)."""
