"""The HTTP edge: one streamed OpenAI chat/completions call per request, timed, failures named by cause.

Timing follows `vllm bench serve`: the clock starts just before the POST; a content chunk is an SSE
event whose first choice carries non-empty generated text (chat `delta.content`, reasoning content, or
completions `text`); role-only and usage-only events are not. A response that finishes without any
text (EOS first, or one token that decodes to nothing) counts its finish event instead, as vLLM does. Output tokens come from the final
`usage` event (requested with stream_options.include_usage). Every request is bounded by `timeout`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import BadInput, LlmnestError
from .datasets import Prompt

Endpoint = Literal["chat", "completions"]
PATHS = {"chat": "/chat/completions", "completions": "/completions"}
CONNECT_TIMEOUT_S = 10.0


@dataclass
class RequestRecord:
    """What one request did. Times are seconds: `scheduled`, `sent`, `ended` from the stage start; `chunks`
    (arrival of each content chunk) from `sent`."""

    index: int
    scheduled: float
    prompt_len: int
    max_tokens: int
    sent: float = 0.0
    ended: float = 0.0
    ok: bool = False
    chunks: list[float] = field(default_factory=list)
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    tokens_from: str = "usage"
    error: str | None = None
    detail: str | None = None
    text: str | None = None  # kept only when the server sent no usage (to count tokens)


def classify(exc: BaseException) -> str:
    """A failure cause people can group by: timeout, connection, or the exception's name."""
    import aiohttp

    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError)):
        return "connection"
    return type(exc).__name__


class Client:
    """An aiohttp session against one OpenAI-compatible base URL (…/v1), with a Bearer key."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str | None,
        endpoint: Endpoint = "chat",
        timeout_s: float = 300.0,
        max_connections: int | None = None,
        ignore_eos: bool = False,
        temperature: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + PATHS[endpoint]
        self.model = model
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.ignore_eos = ignore_eos
        self.temperature = temperature
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._session: Any = None

    async def __aenter__(self) -> Client:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.max_connections or 0, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(
            total=self.timeout_s, sock_connect=min(CONNECT_TIMEOUT_S, self.timeout_s), sock_read=self.timeout_s
        )
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def list_models(self) -> list[str]:
        """GET /models: the served model ids. Unreachable, 401 and non-OpenAI answers are one clear line."""
        import aiohttp

        url = self.base_url + "/models"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
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
        body = json.dumps(self.payload(prompt)).encode()
        now = time.perf_counter
        start = now()
        record.sent = start - t0
        texts: list[str] = []
        try:
            async with self._session.post(self.url, data=body) as resp:
                if resp.status != 200:
                    record.error = f"http {resp.status}"
                    record.detail = (await resp.text())[:300]
                    return record
                await self._read_stream(resp, record, texts, start)
        except asyncio.CancelledError:
            record.error, record.detail = "interrupted", "the run was stopped"
            raise
        except Exception as exc:  # every other failure is data: counted by cause, never fatal
            record.error, record.detail = classify(exc), str(exc)[:300] or type(exc).__name__
            return record
        finally:
            record.ended = now() - t0
        if record.error is None and not record.chunks:
            record.error, record.detail = "no content", "the stream ended without generated text"
        record.ok = record.error is None
        if record.ok and record.output_tokens is None:
            record.text = "".join(texts)
        return record

    async def _read_stream(self, resp: Any, record: RequestRecord, texts: list[str], start: float) -> None:
        """Split the SSE byte stream into events and time each content event as it arrives."""
        now = time.perf_counter
        chat = self.endpoint == "chat"
        buf = b""
        async for data in resp.content.iter_any():
            arrived = now() - start
            buf += data
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            while (end := buf.find(b"\n\n")) >= 0:
                event, buf = buf[:end], buf[end + 2 :]
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue  # comments (pings), event names, ids
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        return
                    self._on_event(json.loads(payload), arrived, record, texts, chat)
                    if record.error:
                        return

    @staticmethod
    def _on_event(obj: Any, arrived: float, record: RequestRecord, texts: list[str], chat: bool) -> None:
        if not isinstance(obj, dict):
            return
        if obj.get("error"):
            err = obj["error"]
            record.error = "stream error"
            record.detail = str(err.get("message") if isinstance(err, dict) else err)[:300]
            return
        choices = obj.get("choices")
        if choices:
            choice = choices[0]
            if chat:
                delta = choice.get("delta") or {}
                text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
            else:
                text = choice.get("text")
            if text:
                record.chunks.append(arrived)
                texts.append(text)
            elif choice.get("finish_reason") and not record.chunks:
                record.chunks.append(arrived)  # finished without visible text (EOS first, a partial byte)
        usage = obj.get("usage")
        if usage:
            record.output_tokens = usage.get("completion_tokens")
            record.prompt_tokens = usage.get("prompt_tokens")
