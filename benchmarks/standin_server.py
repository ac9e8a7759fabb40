#!/usr/bin/env python3
"""A fast stand-in OpenAI server, for measuring what a benchmark client itself costs.

It answers GET /v1/models and streamed POST /v1/chat/completions and /v1/completions the way vLLM
does (a role chunk, one chunk per token, the finish reason on the last one, a usage chunk when
stream_options.include_usage is set, usage in every chunk too with continuous_usage_stats, then [DONE]), with no model behind it: every request gets
`max_tokens` tokens, sent as fast as the loop can (`--itl-ms 0`, yielding between chunks so streams
interleave) or paced. Its own cost per chunk is a few microseconds, so a client driven against it
shows its own cost. HTTP/1.1 keep-alive, chunked transfer encoding, optional API key.

    python benchmarks/standin_server.py --port 18090 [--itl-ms 0] [--ttft-ms 0] [--api-key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
END = b"0\r\n\r\n"


def frame(payload: bytes) -> bytes:
    """One SSE event as one HTTP chunk."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def plain(status: str, obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


class Stream:
    """The chunks of one streamed answer, built once per request."""

    def __init__(self, body: dict, chat: bool, model: str, number: int) -> None:
        rid = f"{'chatcmpl' if chat else 'cmpl'}-standin{number}"
        head = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": model}
        self.n = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)

        def chunk(text: str | None, finish: str | None, role: bool = False) -> bytes:
            """The chunk's JSON without its closing brace (per-chunk usage goes there)."""
            if chat:
                delta = {"role": "assistant", "content": ""} if role else {"content": text}
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}
            return json.dumps({**head, "choices": [choice]}, separators=(",", ":")).encode()[:-1]

        prompt = body.get("prompt") or " ".join(str(m.get("content", "")) for m in body.get("messages") or [])
        self.prompt_tokens = max(1, len(str(prompt).split()))
        options = body.get("stream_options") or {}
        self.continuous = bool(options.get("include_usage") and options.get("continuous_usage_stats"))
        self.role = self.frame(chunk(None, None, role=True), 0) if chat else b""
        self.token = chunk(" tok", None)
        self.last = chunk(" tok", "length")
        self.usage = b""
        if options.get("include_usage"):
            usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.n,
                     "total_tokens": self.prompt_tokens + self.n}
            self.usage = frame(json.dumps({**head, "choices": [], "usage": usage}, separators=(",", ":")).encode())
        self.done = frame(b"[DONE]")

    def frame(self, unclosed: bytes, tokens: int) -> bytes:
        """One chunk as one HTTP chunk, with the usage so far when continuous usage was asked for (as vLLM)."""
        if self.continuous:
            return frame(b'%s,"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}}' % (
                unclosed, self.prompt_tokens, self.prompt_tokens + tokens, tokens))
        return frame(unclosed + b"}")

    def tokens(self) -> list[bytes]:
        """The token chunks, built before sending (so the stand-in's own cost per chunk stays tiny)."""
        if not self.continuous:
            return [self.frame(self.token, 0)] * (self.n - 1) + [self.frame(self.last, 0)]
        return [self.frame(self.last if i == self.n else self.token, i) for i in range(1, self.n + 1)]


class Connection(asyncio.Protocol):
    count = 0

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.resumed: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def pause_writing(self) -> None:
        self.resumed = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
            method, path = lines[0].split(" ")[:2]
            self.handle(method, path, headers, body)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        assert self.transport is not None
        if method == "GET" and path == "/health":
            self.transport.write(plain("200 OK", {}))
        elif self.args.api_key and headers.get("authorization") != f"Bearer {self.args.api_key}":
            self.transport.write(plain("401 Unauthorized", {"error": "Unauthorized"}))
        elif method == "GET" and path.rstrip("/") == "/v1/models":
            self.transport.write(plain("200 OK", {"object": "list", "data": [{"id": self.args.model, "object": "model"}]}))
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            Connection.count += 1
            stream = Stream(json.loads(body), path.endswith("chat/completions"), self.args.model, Connection.count)
            asyncio.get_running_loop().create_task(self.send(stream))
        else:
            self.transport.write(plain("404 Not Found", {"error": f"no route {method} {path}"}))

    async def send(self, s: Stream) -> None:
        assert self.transport is not None
        write, itl = self.transport.write, self.args.itl_ms / 1000
        write(HEAD + s.role)
        if self.args.ttft_ms:
            await asyncio.sleep(self.args.ttft_ms / 1000)
        for token in s.tokens():
            if self.closed:
                return
            write(token)
            if self.resumed is not None and not self.resumed.done():
                await self.resumed
            await asyncio.sleep(itl)
        write(s.usage + s.done + END)


async def serve(args: argparse.Namespace) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: Connection(args), args.host, args.port, backlog=4096)
    print(f"stand-in OpenAI server on http://{args.host}:{args.port}/v1 (model {args.model})", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18090)
    p.add_argument("--model", default="standin")
    p.add_argument("--api-key", default=None)
    p.add_argument("--itl-ms", type=float, default=0.0, help="pause between tokens (0: as fast as possible)")
    p.add_argument("--ttft-ms", type=float, default=0.0, help="pause before the first token")
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
