"""The console's login: one token (0600 under $LLMNEST_HOME) in the URL once, then a session cookie;
every form and fetch that changes something carries a CSRF token derived from the same secret."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from ..home import home, write_secret

COOKIE = "llmnest_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


def token_path() -> Path:
    return home() / "console_token"


def load_or_create_token() -> str:
    """The login token: kept across restarts (a bookmarked URL keeps working), created once, 0600."""
    path = token_path()
    if path.is_file() and (text := path.read_text().strip()):
        path.chmod(0o600)
        return text
    token = secrets.token_urlsafe(32)
    write_secret(path, token)
    return token


def _derive(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, so the token itself never sits in a cookie."""
    return _derive(token, "session")


def csrf_value(token: str) -> str:
    return _derive(token, "csrf")


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
