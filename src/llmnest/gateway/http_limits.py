"""HTTP limits a hostile or careless client cannot get around: the size and number of a request's
headers, how long its headers and body may take to arrive, and how many connections one address may
hold. uvicorn (0.3x+) has options for the idle keep-alive time and the total concurrency but none for
these, so the gateway runs uvicorn's own httptools protocol with these checks added where bytes arrive,
before llhttp parses them: a 64 MiB header costs the gateway 32 KiB of reading, not seconds of parsing.

Each refusal answers with its status (431, 408, 429 for too many connections), closes the connection,
counts it (`on_refuse(reason)`, the gateway's /metrics) and logs one line, at most one per second and
reason, with the count since the last line."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ..errors import BadInput

log = logging.getLogger("llmnest.gateway")


@dataclass(frozen=True)
class HttpLimits:
    """What one request and one client address may take; 0 turns a limit off."""

    max_header_bytes: int = 32 * 1024  # request line and headers together
    max_headers: int = 100
    header_timeout_s: float = 10.0  # from a request's first byte (or the connection) to its last header
    body_timeout_s: float = 30.0  # longest wait for more of a body that has not all arrived
    max_connections_per_client: int = 512  # open connections per client IP address
    max_body_bytes: int = 8 * 1024 * 1024

    ENV_PREFIX = "LLMNEST_GATEWAY_"

    @classmethod
    def from_env(cls, **given: Any) -> HttpLimits:
        """The limits given (None: not given), else `$LLMNEST_GATEWAY_<FIELD>` (e.g.
        LLMNEST_GATEWAY_MAX_HEADER_BYTES), else the defaults; checked."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = given.get(f.name)
            env = f"{cls.ENV_PREFIX}{f.name.upper()}"
            if value is None and os.environ.get(env):
                try:
                    value = (float if f.type == "float" else int)(os.environ[env])
                except ValueError:
                    raise BadInput(f"${env}={os.environ[env]!r} is not a number") from None
            if value is not None:
                if value < 0:
                    raise BadInput(f"--{f.name.removesuffix('_s').replace('_', '-')} must be 0 (no limit) or"
                                   f" positive, not {value}")
                values[f.name] = value
        return cls(**values)


class _Refusals:
    """Counts refusals by reason and logs one line per reason at most once a second."""

    def __init__(self, on_refuse: Callable[[str], None] | None) -> None:
        self.on_refuse = on_refuse
        self.unlogged: dict[str, int] = {}
        self.logged_at: dict[str, float] = {}

    def __call__(self, reason: str, status: int, client: str) -> None:
        if self.on_refuse is not None:
            self.on_refuse(reason)
        self.unlogged[reason] = self.unlogged.get(reason, 0) + 1
        now = time.monotonic()
        if now - self.logged_at.get(reason, 0.0) >= 1.0:
            count = self.unlogged.pop(reason)
            self.logged_at[reason] = now
            log.warning("refused %s %s from %s%s", status, reason.replace("_", " "), client,
                        f" ({count} since the last such line)" if count > 1 else "")


def protocol(limits: HttpLimits, on_refuse: Callable[[str], None] | None = None) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol class with `limits` applied (pass it as uvicorn.Config(http=...))."""
    per_client: dict[str, int] = {}
    refused = _Refusals(on_refuse)

    class LimitedHttpTools(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_bytes = 0
            self._header_count = 0
            self._in_head = True  # reading a request line and headers (or waiting for a request's first byte)
            self._timer: asyncio.TimerHandle | None = None
            self._ip = self.client[0] if self.client else ""
            per_client[self._ip] = per_client.get(self._ip, 0) + 1
            cap = limits.max_connections_per_client
            if cap and per_client[self._ip] > cap:
                self._refuse(429, "too_many_connections", f"more than {cap} open connections from your address")
                return
            self._arm(limits.header_timeout_s, "header_timeout")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            left = per_client.get(self._ip, 1) - 1
            if left:
                per_client[self._ip] = left
            else:
                per_client.pop(self._ip, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            self._unset_keepalive_if_required()
            if self._in_head and self._timer is None:
                self._arm(limits.header_timeout_s, "header_timeout")
            cap = limits.max_header_bytes
            if self._in_head and cap and self._head_bytes + len(data) > cap:
                room = cap - self._head_bytes
                self._feed(data[:room])  # the head may end within the room left, the body follows
                if self._in_head and not self.transport.is_closing():
                    self._refuse(431, "header_too_large", f"request line and headers over {cap} bytes")
                    return
                data = data[room:]
            elif self._in_head:
                self._head_bytes += len(data)
            if data and not self.transport.is_closing():
                self._feed(data)

        def _feed(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._unsupported_upgrade_warning()
            except httptools.HttpParserError:
                if self._header_count > limits.max_headers > 0:
                    self._refuse(431, "too_many_headers", f"more than {limits.max_headers} header fields")
                else:
                    self._refuse(400, "malformed_request", "the request is not valid HTTP/1.1")

        def on_message_begin(self) -> None:
            self._in_head, self._header_count = True, 0
            super().on_message_begin()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if limits.max_headers and self._header_count > limits.max_headers:
                raise ValueError("too many headers")  # ends feed_data with HttpParserCallbackError
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm()
            super().on_headers_complete()
            declared = self._content_length()
            if limits.max_body_bytes and declared is not None and declared > limits.max_body_bytes:
                return  # the app answers 413 from the declared length without reading the body
            if not self.parser.should_upgrade():
                self._arm(limits.body_timeout_s, "body_timeout")

        def on_body(self, body: bytes) -> None:
            if self._timer is not None:
                self._arm(limits.body_timeout_s, "body_timeout")
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._disarm()
            self._in_head, self._head_bytes = True, 0  # what follows is the next request's head
            super().on_message_complete()

        def _content_length(self) -> int | None:
            for name, value in self.headers:
                if name == b"content-length" and value.isdigit():
                    return int(value)
            return None

        def _arm(self, seconds: float, reason: str) -> None:
            self._disarm()
            if seconds:
                self._timer = self.loop.call_later(seconds, self._expired, reason)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self, reason: str) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            started = self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
            what = "headers" if reason == "header_timeout" else "body"
            seconds = limits.header_timeout_s if reason == "header_timeout" else limits.body_timeout_s
            if started:
                refused(reason, 408, self._ip)
                self.transport.close()
            else:
                self._refuse(408, reason, f"the request's {what} did not arrive within {seconds:g} s")

        def _refuse(self, status: int, reason: str, message: str) -> None:
            """Answer with an OpenAI-style error and close the connection."""
            refused(reason, status, self._ip)
            self._disarm()
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True  # the app's request (if any) sees the client gone
                self.cycle.message_event.set()
            body = ('{"error": {"message": "%s", "type": "invalid_request_error", "param": null, "code": "%s"}}'
                    % (message, reason)).encode()
            self.transport.write(b"".join([
                STATUS_LINE[status], b"content-type: application/json\r\n",
                b"content-length: ", str(len(body)).encode(), b"\r\nconnection: close\r\n",
                b"x-request-id: ", os.urandom(12).hex().encode(), b"\r\n",
                *([b"retry-after: 1\r\n"] if status == 429 else []), b"\r\n", body]))
            self.transport.close()

    return LimitedHttpTools
