"""ASGI middleware: no page, data or action without a live session cookie (else the login page), no POST
without the CSRF token (form field or header) from a page of this console's own origin, logout, and the
security headers on every answer (content security policy: this origin's files only, never in a frame)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode

from . import auth

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/login", "/static/", "/favicon.ico")  # the login form, its style sheet and icon hold no data
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
                                 b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make form posts send `Origin: null`
]


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _with_headers(send: Send) -> Send:
    """`send` that adds the security headers to the response start."""

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return sending


class Guard:
    """Login by `?token=` once (sets an HttpOnly, SameSite=Strict cookie and drops the token from the
    URL), then the cookie; wrong or missing: the login page with status 401."""

    def __init__(self, app: ASGIApp, token: str, login_page: Callable[[str, str], bytes]) -> None:
        self.app = app
        self.token = token
        self.csrf = auth.csrf_value(token)
        self.login_page = login_page  # (next path, message) -> HTML
        self.logged_out: set[str] = set()  # sessions ended by logout (they expire anyway)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            send = _with_headers(send)
        await self._guarded(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the console has no websockets; refuse rather than pass one unguarded
            await send({"type": "websocket.close", "code": 1008})
            return
        path: str = scope["path"]
        headers = _headers(scope)
        query = parse_qs(scope.get("query_string", b"").decode())
        if "token" in query:
            await self._token_login(scope, send, query)
            return
        if path.startswith(OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        cookie = SimpleCookie(headers.get("cookie", ""))
        given = cookie[auth.COOKIE].value if auth.COOKIE in cookie else None
        if not auth.session_ok(given, self.token) or given in self.logged_out:
            html = self.login_page(path, "")
            await _respond(send, 401, html, [(b"content-type", b"text/html; charset=utf-8")])
            return
        if scope["method"] not in ("GET", "HEAD"):
            receive = await self._check_csrf(scope, headers, receive, send)
            if receive is None:
                return
            if path == "/logout":
                self.logged_out.add(str(given))
                gone = f"{auth.COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
                await _respond(send, 303, b"", [(b"location", b"/login"), (b"set-cookie", gone.encode())])
                return
        scope.setdefault("state", {})["csrf"] = self.csrf
        await self.app(scope, receive, send)

    async def _token_login(self, scope: Scope, send: Send, query: dict[str, list[str]]) -> None:
        if not auth.same(query["token"][0], self.token):
            html = self.login_page(scope["path"], "That token is not this console's; copy the URL `llmnest console` printed.")
            await _respond(send, 401, html, [(b"content-type", b"text/html; charset=utf-8")])
            return
        rest = {k: v for k, v in query.items() if k != "token"}
        location = scope["path"] + (f"?{urlencode(rest, doseq=True)}" if rest else "")
        cookie = auth.session_cookie(auth.session_value(self.token))
        await _respond(send, 303, b"", [(b"location", location.encode()), (b"set-cookie", cookie.encode())])

    async def _check_csrf(self, scope: Scope, headers: dict[str, str], receive: Receive, send: Send) -> Receive | None:
        """The receive to pass on (the body replayed), or None after refusing with 403."""
        origin = headers.get("origin")
        host = headers.get("host", "")
        if origin and origin.split("://", 1)[-1] != host:
            await _respond(send, 403, b"cross-origin request refused", [(b"content-type", b"text/plain")])
            return None
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        given = headers.get(auth.CSRF_HEADER)
        if given is None and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            given = (parse_qs(body.decode("utf-8", "replace")).get(auth.CSRF_FIELD) or [None])[0]
        if not auth.same(given, self.csrf):
            await _respond(send, 403, b"missing or wrong CSRF token; reload the page and try again",
                           [(b"content-type", b"text/plain")])
            return None
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay
