"""Close-name suggestions for unknown names ("did you mean ...")."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_names(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Candidates that look like `name`, best first, matching case-insensitively and on substrings."""
    pool = list(candidates)
    lowered = {c.lower(): c for c in pool}
    hits = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)]
    key = name.lower().split("/")[-1]
    hits += [c for c in pool if key and key in c.lower() and c not in hits]
    return hits[:n]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' Did you mean: a, b?' or '' when nothing is close."""
    hits = close_names(name, candidates)
    return f" Did you mean: {', '.join(hits)}?" if hits else ""
