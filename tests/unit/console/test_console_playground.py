"""The playground's stream: reasoning apart from the answer, the figures from the engine's own usage,
an engine error as one line. The engine here is a stand-in answering over ASGI: no reasoning model
(deepseek_r1 / qwen3 parser) can run on this machine, so its chunks are written out as vLLM sends them."""

from __future__ import annotations

import asyncio
import json

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmnest.console.playground import figures, stream

CHUNKS = [{"choices": [{"delta": {"role": "assistant", "content": ""}}]},
          {"choices": [{"delta": {"reasoning_content": "The user greets; "}}]},
          {"choices": [{"delta": {"reasoning_content": "answer briefly."}}]},
          {"choices": [{"delta": {"content": "Hello"}}]},
          {"choices": [{"delta": {"content": " there!"}, "finish_reason": "length"}]},
          {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}]


def engine(seen: list[dict]) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        seen.append({"auth": request.headers.get("authorization"), **body})
        if body["max_tokens"] == 999:
            return JSONResponse({"error": {"message": "max_tokens is too large"}}, status_code=400)

        async def events():
            for c in CHUNKS:
                yield f"data: {json.dumps(c)}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")
    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def run(payload: dict, seen: list[dict]) -> list[dict]:
    async def collect() -> list[dict]:
        transport = httpx.ASGITransport(app=engine(seen))
        return [json.loads(e.removeprefix("data: ")) async for e in
                stream("http://engine/v1/chat/completions", "sk-secret", payload, "demo", transport)]
    return asyncio.run(collect())


def test_reasoning_apart_and_figures_from_usage() -> None:
    seen: list[dict] = []
    events = run({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "stream": True}, seen)
    assert seen[0]["auth"] == "Bearer sk-secret"  # the key goes to the engine, from the server
    assert "".join(e["text"] for e in events if e["type"] == "reasoning") == "The user greets; answer briefly."
    assert "".join(e["text"] for e in events if e["type"] == "content") == "Hello there!"
    done = events[-1]
    assert done["type"] == "done" and done["prompt_tokens"] == 11 and done["completion_tokens"] == 7
    assert done["counted_by"] == "engine usage" and done["ttft_ms"] is not None and done["ttft_ms"] >= 0
    assert done["finish_reason"] == "length"  # the page marks the answer as cut off by max tokens


def test_an_engine_error_is_one_line() -> None:
    events = run({"model": "m", "messages": [], "max_tokens": 999}, [])
    assert events == [{"type": "error", "message": "demo answered HTTP 400: max_tokens is too large"}]


def test_figures_arithmetic() -> None:
    got = figures(t0=10.0, first=10.5, end=12.5, usage={"prompt_tokens": 3, "completion_tokens": 9}, pieces=4)
    assert got["ttft_ms"] == 500 and got["e2e_ms"] == 2500
    assert got["tokens_per_s"] == 4.0  # 8 tokens after the first in 2 s
    none = figures(t0=1.0, first=None, end=2.0, usage=None, pieces=0)
    assert none["ttft_ms"] is None and none["tokens_per_s"] is None and none["counted_by"] == "chunks"
