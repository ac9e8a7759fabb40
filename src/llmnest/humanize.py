"""Quantities as people read them, the same in the CLI and the console."""

from __future__ import annotations


def duration(seconds: float | None) -> str:
    """'2h05m', '3m07s', '41s'; '-' when unknown."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
