"""The keys and usage of a gateway on another machine, through its target's own authenticated channel.

A target whose gateway runs elsewhere (an Alibaba Cloud instance: Cloud Assistant; a Kubernetes pod:
exec) gives a `GatewayChannel`: it runs `llmnest ARGV...` next to that gateway, with its settings, and
hands back the exit code, stdout and stderr. `RemoteAdmin` maps each admin call to the `llmnest keys` or
`llmnest usage` command with `--json`, checks names and limits here first (so a bad value is refused with
the same words as locally, before anything is sent), and maps exit codes back to the same errors
(2 BadInput, 3 Conflict, 4 NotFound, else a failure).

A new key's secret never leaves this machine: it is made here (or read from `--key-file` here) and the
gateway gets its SHA-256 and shown prefix only (`keys create --key-sha256 --key-prefix`), so neither the
command a channel carries nor the output it keeps holds it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import BadInput, Conflict, ExitCode, LlmnestError, NotFound
from . import keys, usage
from .admin import LIMITS, GatewayAdmin

ERRORS: dict[int, type[LlmnestError]] = {ExitCode.BAD_INPUT: BadInput, ExitCode.CONFLICT: Conflict,
                                         ExitCode.NOT_FOUND: NotFound}
CLEARABLE = ("rpm", "tpm", "max_concurrency", "token_budget", "models", "expires")


@dataclass(frozen=True)
class ChannelResult:
    """What `llmnest ARGV...` did next to the gateway."""

    exit_code: int
    stdout: str
    stderr: str


class GatewayChannel(Protocol):
    """Runs `llmnest ARGV...` next to a deployment's gateway (with that gateway's settings and database).
    Raises LlmnestError when the command could not be run at all (the transport failed)."""

    def run(self, argv: list[str]) -> ChannelResult: ...


def error_line(stderr: str) -> str | None:
    """The one line the CLI printed for an error (`error: ...`), else the last line of stderr."""
    lines = [line.strip(" │╭╮╰╯─") for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    found = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    return (found or lines or [None])[-1]


def _limit_flags(limits: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for field in LIMITS:
        value = limits.get(field)
        if value is not None:
            flags += [f"--{field.replace('_', '-')}", ",".join(value) if field == "models" else str(value)]
    return flags


def _expiry(expires: str | None) -> list[str]:
    """`--expires` as a UTC date-time, checked here (a date too early is refused before anything is sent)."""
    at = keys.parse_expiry(expires)
    return ["--expires", dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat()] if at is not None else []


class RemoteAdmin(GatewayAdmin):
    """Keys and usage of the gateway next to deployment `deployment`, through `channel`."""

    local = False

    def __init__(self, channel: GatewayChannel, deployment: str) -> None:
        self.channel = channel
        self.deployment = deployment

    def _json(self, argv: list[str]) -> Any:
        result = self.channel.run(argv)
        if result.exit_code != 0:
            line = error_line(result.stderr) or f"exit {result.exit_code}"
            # hints name the command to run here, which needs --deployment to reach that gateway
            line = re.sub(r"`llmnest (keys|usage)([^`]*)`", rf"`llmnest \1\2 --deployment {self.deployment}`", line)
            if "No such option" in line:  # typer's words: that llmnest predates an option this one sends
                line = f"the llmnest next to the gateway of {self.deployment} is older than this one ({line})"
            cls = ERRORS.get(result.exit_code)
            if cls is None:
                raise LlmnestError(f"llmnest {' '.join(argv[:2])} failed next to the gateway of {self.deployment} "
                                   f"(exit {result.exit_code}): {line}")
            raise cls(line)
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise LlmnestError(f"llmnest {' '.join(argv[:2])} next to the gateway of {self.deployment} printed no "
                               f"JSON: {result.stdout.strip()[:200]!r}") from None

    def create_key(self, name: str, limits: dict[str, Any], expires: str | None = None,
                   secret: str | None = None) -> tuple[str, str]:
        keys.check(name, limits, new=True)
        secret = secret or keys.new_secret()
        self._json(["keys", "create", "--key-sha256", keys.hash_secret(secret), "--key-prefix", secret[:7],
                    *_limit_flags(limits), *_expiry(expires), "--json", "--", name])
        return secret[:7], secret

    def key_rows(self) -> list[dict[str, Any]]:
        return self._json(["keys", "ls", "--json"])

    def update_key(self, name: str, limits: dict[str, Any], expires: str | None = None,
                   clear: tuple[str, ...] = ()) -> dict[str, Any]:
        keys.check(name, limits, new=False)
        unknown = [c for c in clear if c not in CLEARABLE]
        if unknown:
            raise BadInput(f"cannot clear {', '.join(unknown)}; clearable: {', '.join(CLEARABLE)}")
        clears = [arg for c in clear for arg in ("--clear", c)]
        return self._json(["keys", "update", *_limit_flags(limits), *_expiry(expires), *clears, "--json", "--", name])

    def revoke_key(self, name: str) -> dict[str, Any]:
        keys.check(name, {}, new=False)
        return self._json(["keys", "revoke", "--json", "--", name])

    def usage(self, by: str, since: str) -> list[dict[str, Any]]:
        if by not in usage.BY:
            raise BadInput(f"--by must be one of {', '.join(usage.BY)}, not {by!r}")
        usage.parse_since(since)
        return self._json(["usage", "--by", by, "--since", since, "--json"])
