"""The call engine: turn-taking, playout with marks, barge-in (DESIGN.md §3)."""
