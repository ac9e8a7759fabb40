"""Render commands as readable, correct bash: one flag per line, secrets read from files."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence


def _word(value: str, secrets: Mapping[str, str]) -> str:
    return secrets.get(value) or shlex.quote(value)


def render(argv: Sequence[str], env: Mapping[str, str] | None = None, secrets: Mapping[str, str] | None = None) -> str:
    """`env K=V ... argv` as a multi-line bash command.

    `secrets` maps a secret value to the shell expression that stands for it (for example
    '"$(cat ~/.llmnest/deployments/x/api_key)"'), so printed commands never carry the secret.
    A flag and its value stay on one line; every line but the last ends in a bare backslash.
    """
    secrets = secrets or {}
    head = ["env"] + [f"{k}={_word(v, secrets)}" for k, v in (env or {}).items()] if env else []
    lines: list[str] = [" ".join(head)] if head else []
    words = list(argv)
    i = 0
    first = True
    while i < len(words):
        part = [_word(words[i], secrets)]
        # keep the program and its "-m module" together, and each "--flag value" pair together
        takes_value = i + 1 < len(words) and not words[i + 1].startswith("--")
        if (first or words[i].startswith("-")) and takes_value:
            part.append(_word(words[i + 1], secrets))
            i += 1
            if first and i + 1 < len(words) and words[i] == "-m":
                part.append(_word(words[i + 1], secrets))
                i += 1
        lines.append(" ".join(part))
        first = False
        i += 1
    return " \\\n  ".join(lines)
