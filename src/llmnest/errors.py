"""Errors a person can act on: one line of what is wrong and what to do, and an exit code."""

from __future__ import annotations


class ExitCode:
    """Exit codes scripts can rely on (documented in the README)."""

    OK = 0
    FAILED = 1  # the work was tried and did not succeed (engine died, timeout, stack failed)
    BAD_INPUT = 2  # the request is wrong: unknown model, bad flag value, invalid spec
    CONFLICT = 3  # the request is fine but this machine or state refuses it (port/name in use)
    NOT_FOUND = 4  # the named deployment or run does not exist
    INTERRUPTED = 130


class LlmnestError(Exception):
    """An error shown to the user as one line; `exit_code` is what the CLI returns."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail  # extra lines (log tail) printed after the message


class BadInput(LlmnestError):
    exit_code = ExitCode.BAD_INPUT


class Conflict(LlmnestError):
    exit_code = ExitCode.CONFLICT


class NotFound(LlmnestError):
    exit_code = ExitCode.NOT_FOUND
