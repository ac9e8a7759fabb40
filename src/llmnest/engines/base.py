"""What an engine renderer returns: a Python module to run, its arguments and environment."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Launch:
    """An engine start, independent of where it runs (process or container)."""

    module: str
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, python: str) -> list[str]:
        return [python, "-m", self.module, *self.args]


def flag_args(flags: dict[str, str]) -> list[str]:
    """Pass-through flags: 'true' -> --flag, 'false' -> --no-flag, else --flag VALUE."""
    out: list[str] = []
    for name, value in flags.items():
        flag = f"--{name}"
        if value.lower() == "true":
            out.append(flag)
        elif value.lower() == "false":
            out.append(f"--no-{name}")
        else:
            out += [flag, value]
    return out
