"""The console's login: one token (0600 under $LLMNEST_HOME) in the URL once, then a session cookie;
every form and fetch that changes something carries a CSRF token derived from the same secret."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path

from ..home import home, write_secret

COOKIE = "llmnest_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600  # a login lasts a working day; then the token URL or the form again


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


def session_value(token: str, issued: float | None = None) -> str:
    """What the cookie holds: when it was issued and a MAC of that time under the token (the token itself
    never sits in a cookie, and a stolen cookie stops working after SESSION_SECONDS)."""
    stamp = str(int(issued if issued is not None else time.time()))
    return f"{stamp}.{_derive(token, 'session:' + stamp)}"


def session_ok(given: str | None, token: str, now: float | None = None) -> bool:
    """A cookie this console issued less than SESSION_SECONDS ago."""
    stamp, _, _mac = (given or "").partition(".")
    if not stamp.isdigit() or not 0 <= (now if now is not None else time.time()) - int(stamp) < SESSION_SECONDS:
        return False
    return same(given, session_value(token, int(stamp)))


def session_cookie(value: str) -> str:
    return f"{COOKIE}={value}; Path=/; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict"


def csrf_value(token: str) -> str:
    return _derive(token, "csrf")


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
