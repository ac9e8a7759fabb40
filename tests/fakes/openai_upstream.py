"""A fast stand-in for an engine replica: OpenAI-like chat and completions, streaming or not, with the
engine's `usage` (also per chunk with stream_options.continuous_usage_stats, as vLLM does).

Tokens are whitespace-separated words: the prompt's words are its prompt_tokens, and the answer is
`max_tokens` words (default 8). Extra body fields steer it: `fake_delay` seconds between chunks,
`fake_status` an HTTP status to answer with (`--fail-status` for every request). GET /stats reports requests, cancelled streams and
tokens served, so tests can compare the gateway's records with what this replica really did.

Run: python -m tests.fakes.openai_upstream --port P --model M [--api-key K] [--replica R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def make_app(model: str, api_key: str | None, replica: str, fail_status: int | None = None) -> Starlette:
    stats = {"requests": 0, "cancelled": 0, "prompt_tokens": 0, "completion_tokens": 0, "in_flight": 0}

    def words(body: dict[str, Any]) -> int:
        if "messages" in body:
            return sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        return len(str(body.get("prompt", "")).split())

    async def complete(request: Request) -> Response:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return JSONResponse({"error": {"message": "Unauthorized"}}, status_code=401)
        body = await request.json()
        if body.get("model") != model:
            return JSONResponse({"error": {"message": f"model {body.get('model')} does not exist"}}, status_code=404)
        if body.get("fake_status") or fail_status:
            return JSONResponse({"error": {"message": "fake failure"}}, status_code=int(body.get("fake_status") or fail_status))
        stats["requests"] += 1
        chat = request.url.path.endswith("/chat/completions")
        prompt, n = words(body), int(body.get("max_tokens") or 8)
        delay = float(body.get("fake_delay") or 0)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{replica}-{stats['requests']}"
        usage = lambda done: {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}  # noqa: E731
        if not body.get("stream"):
            if delay:
                await asyncio.sleep(delay * n)
            stats["prompt_tokens"] += prompt
            stats["completion_tokens"] += n
            text = " ".join(f"w{i}" for i in range(n))
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                      if chat else {"index": 0, "text": text, "finish_reason": "length"})
            return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                                 "created": int(time.time()), "model": model, "choices": [choice], "usage": usage(n)})
        options = body.get("stream_options") or {}

        async def events() -> AsyncIterator[bytes]:
            stats["in_flight"] += 1
            stats["prompt_tokens"] += prompt
            sent = 0
            try:
                for i in range(n):
                    if delay:
                        await asyncio.sleep(delay)
                    delta = {"content": f" w{i}" if i else "w0"} if chat else None
                    choice = {"index": 0, "delta": delta, "finish_reason": None} if chat else \
                        {"index": 0, "text": f" w{i}" if i else "w0", "finish_reason": None}
                    chunk: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                                             "created": 0, "model": model, "choices": [choice]}
                    sent += 1
                    stats["completion_tokens"] += 1
                    if options.get("include_usage") and options.get("continuous_usage_stats"):
                        chunk["usage"] = usage(sent)
                    yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
                if options.get("include_usage"):
                    final = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                             "created": 0, "model": model, "choices": [], "usage": usage(sent)}
                    yield b"data: " + json.dumps(final, separators=(",", ":")).encode() + b"\n\n"
                yield b"data: [DONE]\n\n"
            except BaseException:
                stats["cancelled"] += 1
                raise
            finally:
                stats["in_flight"] -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    async def other(request: Request) -> Response:
        """vLLM's other routes, enough to see that the gateway reaches them: /tokenize, /detokenize,
        /v1/embeddings, /v1/responses (not streamed), /v1/models (with max_model_len)."""
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return JSONResponse({"error": {"message": "Unauthorized"}}, status_code=401)
        path = request.url.path
        if path == "/v1/models":
            return JSONResponse({"object": "list", "data": [{"id": model, "object": "model", "max_model_len": 2048}]})
        body = await request.json()
        n = words({"prompt": body.get("prompt") or body.get("input") or ""})
        stats["requests"] += 1
        if path == "/tokenize":
            return JSONResponse({"count": n, "max_model_len": 2048, "tokens": list(range(n))})
        if path == "/detokenize":
            return JSONResponse({"prompt": " ".join(f"w{t}" for t in body.get("tokens") or [])})
        if path == "/v1/embeddings":
            return JSONResponse({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
                                 "model": model, "usage": {"prompt_tokens": n, "total_tokens": n}})
        out = int(body.get("max_output_tokens") or 8)
        return JSONResponse({"id": "resp-1", "object": "response", "model": model, "status": "completed",
                             "output": [{"type": "message", "content": [{"type": "output_text", "text": "w0"}]}],
                             "usage": {"input_tokens": n, "output_tokens": out, "total_tokens": n + out}})

    async def get_stats(request: Request) -> Response:
        return JSONResponse({**stats, "replica": replica})

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(routes=[
        Route("/v1/chat/completions", complete, methods=["POST"]),
        Route("/v1/completions", complete, methods=["POST"]),
        Route("/health", health), Route("/stats", get_stats), Route("/v1/models", other),
        *(Route(p, other, methods=["POST"]) for p in ("/tokenize", "/detokenize", "/v1/embeddings", "/v1/responses")),
    ])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--api-key")
    parser.add_argument("--replica", default="r0")
    parser.add_argument("--fail-status", type=int, help="answer every completion with this HTTP status")
    args = parser.parse_args()
    uvicorn.run(make_app(args.model, args.api_key, args.replica, args.fail_status), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
