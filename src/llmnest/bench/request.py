"""The HTTP edge: one streamed OpenAI chat/completions call per request, timed, failures named by cause.

Requests go over the shared HTTP/1.1 client (`llmnest.http1`, keep-alive connections): each socket read's
body bytes are handed straight to the pure event reader in `stream` with one clock reading, so a chunk
costs no task switch, no stream-reader buffer and no per-line object (see docs/bench.md). The clock
starts just before the request is written, as in `vllm bench serve`. Every request, connection
included, is bounded by `timeout`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from .. import http1
from ..errors import BadInput, LlmnestError
from .datasets import Prompt
from .record import RequestRecord
from .stream import EventReader

try:
    from orjson import dumps
except ImportError:  # pragma: no cover - orjson is part of the bench extra
    import json

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj).encode()

__all__ = ["Client", "Endpoint", "RequestRecord", "classify"]

Endpoint = Literal["chat", "completions"]
PATHS = {"chat": "/chat/completions", "completions": "/completions"}
CONNECT_TIMEOUT_S = 10.0
# A stream whose chunks come less than this apart is read at most once per interval (uvloop's timers
# fire at 1 ms resolution, so up to ~2 ms): a chunk is stamped at most that late, and never the first
# one (TTFT) nor any chunk of a stream slower than 1,000 chunks/s, i.e. of any real server's stream.
# It keeps the cost per chunk of a very fast stream at a fraction of one socket read per chunk.
COALESCE_S = 0.001


def classify(exc: BaseException) -> str:
    """A failure cause people can group by: timeout, connection, or the exception's name."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, (ConnectionError, OSError, EOFError)):
        return "connection"
    return type(exc).__name__


class Client:
    """Streamed requests to one OpenAI-compatible base URL (…/v1), with a Bearer key, over a pool of
    keep-alive connections (one per request in flight)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str | None,
        endpoint: Endpoint = "chat",
        timeout_s: float = 300.0,
        ignore_eos: bool = False,
        temperature: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + PATHS[endpoint]
        self.model = model
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._http = self._new_http()
        try:
            self._http.target(self.url)
        except http1.HttpError:
            raise BadInput(f"{base_url} is not an http(s) URL; give e.g. http://host:8000/v1") from None
        self.ignore_eos = ignore_eos
        self.temperature = temperature
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._request_headers = {"Accept": "text/event-stream", **self.headers}

    def _new_http(self) -> http1.Client:
        return http1.Client(self.timeout_s, CONNECT_TIMEOUT_S, gather_s=COALESCE_S)

    def __getstate__(self) -> dict[str, Any]:
        """Configuration only (a worker process opens its own connections)."""
        return {**self.__dict__, "_http": self._new_http()}

    async def __aenter__(self) -> Client:
        self._http = self._new_http()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._http.close()

    def idle(self) -> int:
        """Kept-alive connections waiting for the next request."""
        return self._http.idle()

    async def list_models(self) -> list[str]:
        """GET /models: the served model ids. Unreachable, 401 and non-OpenAI answers are one clear line."""
        import aiohttp

        url = self.base_url + "/models"
        try:
            async with aiohttp.ClientSession(headers=self.headers) as session, \
                    session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                if resp.status == 401:
                    if "Authorization" in self.headers:
                        raise BadInput(f"{self.base_url} refused the API key (HTTP 401); pass the right --api-key")
                    raise BadInput(f"{self.base_url} needs an API key (HTTP 401); pass --api-key")
                if resp.status != 200:
                    raise BadInput(
                        f"GET {url} answered HTTP {resp.status}; is {self.base_url} an OpenAI-compatible "
                        "base URL (usually ending in /v1)?"
                    )
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise LlmnestError(f"cannot reach {self.base_url} ({classify(exc)}); is the server up?") from None
        except ValueError:
            raise BadInput(f"GET {url} did not answer JSON; is {self.base_url} an OpenAI-compatible base URL?") from None
        data = body.get("data") if isinstance(body, dict) else None
        return [m["id"] for m in data or [] if isinstance(m, dict) and "id" in m]

    async def check_model(self) -> str:
        """The model to ask for: --model if served, else the server's first model."""
        served = await self.list_models()
        if self.model is None:
            if not served:
                raise BadInput(f"{self.base_url} lists no model; pass --model")
            self.model = served[0]
        elif served and self.model not in served:
            raise BadInput(f"model {self.model!r} is not served at {self.base_url} (it serves: {', '.join(served)})")
        return self.model

    def payload(self, prompt: Prompt) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": prompt.output_len,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt.text}]
        else:
            body["prompt"] = prompt.text
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def send(self, prompt: Prompt, record: RequestRecord, t0: float) -> RequestRecord:
        """POST one streamed request and fill `record`; never raises except on cancellation."""
        body = dumps(self.payload(prompt))
        start = time.perf_counter()
        record.sent = start - t0
        events = EventReader(record, self.endpoint == "chat", start)
        response: http1.Response | None = None
        try:
            response = await self._http.post(self.url, body, self._request_headers, events.feed, self.timeout_s)
            record.written = response.written - t0
            if response.status != 200:
                record.error, record.detail = f"http {response.status}", await _detail(response)
        except asyncio.CancelledError:
            record.error, record.detail = "interrupted", "the run was stopped"
            raise
        except Exception as exc:  # every other failure is data: counted by cause, never fatal
            if (written := getattr(exc, "written", None)) is not None:
                record.written = written - t0
            record.error, record.detail = classify(exc), str(exc)[:300] or type(exc).__name__
        finally:
            record.ended = time.perf_counter() - t0
            if response is not None:
                response.close()
        if record.error is None and not record.chunks:
            record.error, record.detail = "no content", "the stream ended without generated text"
        record.ok = record.error is None
        if record.ok and record.output_tokens is None:
            record.text = events.text()
        return record


async def _detail(response: http1.Response) -> str:
    """What a non-200 answer said (its first 300 characters), for the failure record."""
    kept = b""
    while data := await response.next():
        if len(kept) < 300:
            kept += data
    return kept.decode("utf-8", "replace")[:300]
