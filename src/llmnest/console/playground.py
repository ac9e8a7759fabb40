"""The playground: chat with a deployment through its OpenAI endpoint, proxied here so the key never
reaches the browser. The answer streams as server-sent events: reasoning and content apart, then the
figures of the answer (TTFT, output tokens/s, token counts from the engine's own usage)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .. import lifecycle, state
from ..errors import BadInput, LlmnestError
from .console_key import key_for
from .web import call, http_status, render

MAX_TOKENS_LIMIT = 32768
LABELS = {"max_tokens": "Max tokens (the model's context)", "temperature": "Temperature", "top_p": "Top p"}


PRESETS = {"balanced": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 512},
           "precise": {"temperature": 0.1, "top_p": 1.0, "max_tokens": 512},
           "creative": {"temperature": 1.1, "top_p": 0.95, "max_tokens": 1024},
           "code": {"temperature": 0.2, "top_p": 1.0, "max_tokens": 2048}}


def context_of(dep: state.Deployment) -> int:
    """The longest sequence (prompt + answer) the deployment's engine takes, in tokens."""
    if dep.spec.max_model_len:
        return dep.spec.max_model_len
    from ..catalog import find_model

    model = find_model(dep.spec.model)
    return model.max_model_len if model else MAX_TOKENS_LIMIT


def _choices() -> list[dict[str, Any]]:
    """The deployments to chat with, each with its context length (the most Max tokens may ask for)."""
    out = []
    for row in lifecycle.rows():
        try:
            context = context_of(state.get(row["name"]))
        except LlmnestError:
            context = MAX_TOKENS_LIMIT
        out.append({**row, "context": context})
    return out


async def page(request: Request) -> Response:
    rows = await call(_choices)
    chosen = request.query_params.get("deployment")
    return render(request, "playground.html", rows=rows, chosen=chosen, presets=PRESETS)


def _number(body: dict[str, Any], key: str, kind: type, low: float, high: float, default: Any) -> Any:
    value = body.get(key)
    if value in (None, ""):
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise BadInput(f"{key} must be a number, not {value!r}") from None
    if not low <= number <= high:
        raise BadInput(f"{LABELS.get(key, key)} must be between {low:g} and {high:g}, not {number:g}")
    return number


def _request(body: dict[str, Any]) -> tuple[str, str | None, dict[str, Any], str]:
    """(URL, key, payload, deployment) for a chat request; BadInput / NotFound for what is wrong."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
            for m in messages):
        raise BadInput("messages must be a non-empty list of {role, content}; type a prompt")
    dep = state.get(state.resolve_name(body.get("deployment") or None))
    key = key_for(dep)
    eps = lifecycle.endpoints(dep, key)
    if not eps:
        raise BadInput(f"{dep.name} has no endpoint yet (status {dep.status}); see its page")
    system = str(body.get("system") or "").strip()
    payload = {
        "model": dep.spec.served_model_name,
        "messages": ([{"role": "system", "content": system}] if system else []) + messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": _number(body, "temperature", float, 0.0, 2.0, 0.7),
        "top_p": _number(body, "top_p", float, 0.01, 1.0, 1.0),
        "max_tokens": _number(body, "max_tokens", int, 1, context_of(dep), 256),
    }
    return eps[0].base_url.rstrip("/") + "/chat/completions", key, payload, dep.name


def _event(kind: str, **data: Any) -> str:
    return f"data: {json.dumps({'type': kind, **data})}\n\n"


def figures(t0: float, first: float | None, end: float, usage: dict[str, Any] | None, pieces: int) -> dict[str, Any]:
    """TTFT, end-to-end time and output tokens per second after the first token (1000 / TPOT)."""
    completion = (usage or {}).get("completion_tokens") or pieces
    decode_s = end - first if first is not None else 0.0
    return {
        "ttft_ms": round((first - t0) * 1000) if first is not None else None,
        "e2e_ms": round((end - t0) * 1000),
        "tokens_per_s": round((completion - 1) / decode_s, 1) if completion > 1 and decode_s > 0 else None,
        "prompt_tokens": (usage or {}).get("prompt_tokens"),
        "completion_tokens": completion,
        "counted_by": "engine usage" if usage else "chunks",
    }


async def stream(url: str, key: str | None, payload: dict[str, Any], name: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> AsyncIterator[str]:
    """The engine's OpenAI stream as the playground's events (`transport`: where the HTTP goes, for tests)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    t0, first, usage, pieces, finish = time.monotonic(), None, None, 0, None
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10), transport=transport) as client, \
                client.stream("POST", url, json=payload, headers=headers) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode("utf-8", "replace")
                yield _event("error", message=f"{name} answered HTTP {resp.status_code}: {_message(text)}")
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    delta = choice.get("delta") or {}
                    for kind, text in (("reasoning", delta.get("reasoning_content") or delta.get("reasoning")),
                                       ("content", delta.get("content"))):
                        if text:
                            first = first or time.monotonic()
                            pieces += 1
                            yield _event(kind, text=text)
    except httpx.HTTPError as exc:
        yield _event("error", message=f"cannot reach {name} at {url} ({type(exc).__name__}); see its status and log")
        return
    yield _event("done", finish_reason=finish, **figures(t0, first, time.monotonic(), usage, pieces))


def _message(text: str) -> str:
    try:
        doc = json.loads(text)
        error = doc.get("error", doc)
        return str(error.get("message", error) if isinstance(error, dict) else error)[:300]
    except (ValueError, AttributeError):
        return text[:300]


async def chat(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "send a JSON body"}, status_code=400)
    try:
        url, key, payload, name = await call(_request, body if isinstance(body, dict) else {})
    except LlmnestError as exc:
        return JSONResponse({"error": exc.message}, status_code=http_status(exc))
    return StreamingResponse(stream(url, key, payload, name), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def conversations_api(request: Request) -> Response:
    """GET: the list; POST: save a new one (its id in the answer)."""
    from . import conversations

    if request.method == "GET":
        return JSONResponse(await call(conversations.listed))
    return await _save(request, None)


async def conversation_api(request: Request) -> Response:
    """GET one; PUT: save it; DELETE: forget it."""
    from . import conversations

    conv_id = request.path_params["conv_id"]
    try:
        if request.method == "GET":
            return JSONResponse(await call(conversations.load, conv_id))
        if request.method == "DELETE":
            await call(conversations.delete, conv_id)
            return JSONResponse({"deleted": conv_id})
    except LlmnestError as exc:
        return JSONResponse({"error": exc.message}, status_code=http_status(exc))
    return await _save(request, conv_id)


async def _save(request: Request, conv_id: str | None) -> Response:
    from . import conversations

    try:
        doc = await request.json()
    except ValueError:
        return JSONResponse({"error": "send a JSON body"}, status_code=400)
    try:
        return JSONResponse({"id": await call(conversations.save, conv_id, doc)})
    except LlmnestError as exc:
        return JSONResponse({"error": exc.message}, status_code=http_status(exc))
