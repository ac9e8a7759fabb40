#!/usr/bin/env python3
"""A fast stand-in OpenAI server, for measuring what a benchmark client itself costs.

It answers GET /v1/models and streamed POST /v1/chat/completions and /v1/completions the way vLLM
does (a role chunk, one chunk per token, the finish reason on the last one, a usage chunk when
stream_options.include_usage is set, usage in every chunk too with continuous_usage_stats, as the
gateway asks for, then [DONE]), with no model behind it: every request gets
`max_tokens` tokens. HTTP/1.1 keep-alive, chunked transfer encoding, optional API key.

It is built to cost as little CPU as possible, because on a small machine it shares the cores with
the client it measures: the chunks are prepared bytes (only the usage chunk is formatted per
request), and one pump writes the next chunk of every open stream per round, like a server's decode
step, instead of a task and a timer per stream. A round runs every `--itl-ms` (0: every event-loop
iteration, as fast as it can, so streams still interleave chunk by chunk). A new stream's first token
goes out at once (after `--ttft-ms`); it then joins the next round, so its first gap is at most one
ITL and every later gap is one ITL.

    python benchmarks/standin_server.py --port 18090 [--itl-ms 0] [--ttft-ms 0] [--api-key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

try:
    from orjson import dumps as _dumps
    from orjson import loads
except ImportError:  # the plain parser does too, a little slower
    import json

    loads = json.loads

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
END = b"0\r\n\r\n"


def frame(payload: bytes) -> bytes:
    """One SSE event as one HTTP chunk."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def plain(status: str, obj: dict) -> bytes:
    body = _dumps(obj)
    return f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


def header(fields: bytes, lower: bytes, name: bytes) -> bytes:
    """The value of header `name` (lower case, with its colon) in the header lines (each after a CRLF), or b""."""
    at = lower.find(b"\r\n" + name)
    if at < 0:
        return b""
    end = lower.find(b"\r\n", at + 2)
    return fields[at + 2 + len(name):end if end >= 0 else None].strip()


class Shape:
    """The prepared chunks of one endpoint (chat or completions): all but the usage are the same bytes
    for every request."""

    def __init__(self, chat: bool, model: str) -> None:
        head = {"id": "chatcmpl-standin" if chat else "cmpl-standin",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": model}

        def chunk(text: str | None, finish: str | None, role: bool = False) -> dict:
            if chat:
                delta = {"role": "assistant", "content": ""} if role else {"content": text}
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}
            return {**head, "choices": [choice]}

        def with_usage(obj: dict) -> bytes:
            """`obj` with a usage object, as a %-template of (prompt, completion, total) tokens."""
            raw = _dumps({**obj, "usage": {"prompt_tokens": 0}})
            return raw[:raw.rfind(b"0}}")].replace(b"%", b"%%") + b"%d,\"completion_tokens\":%d,\"total_tokens\":%d}}"

        self.start = HEAD + (frame(_dumps(chunk(None, None, role=True))) if chat else b"")
        self.token = frame(_dumps(chunk(" tok", None)))
        self.last = frame(_dumps(chunk(" tok", "length")))
        self.token_usage = with_usage(chunk(" tok", None))
        self.last_usage = with_usage(chunk(" tok", "length"))
        self.usage = with_usage({**head, "choices": []})
        self.done = frame(b"[DONE]") + END

    def tail(self, prompt_tokens: int | None, n: int, continuous: bool) -> bytes:
        """The last token, the usage chunk (when asked for), [DONE] and the end of the body."""
        if prompt_tokens is None:
            return self.last + self.done
        used = (prompt_tokens, n, prompt_tokens + n)
        last = frame(self.last_usage % used) if continuous else self.last
        return last + frame(self.usage % used) + self.done


class Stream:
    """One answer being written: its connection, its shape, the tokens still to send and its tail, and
    with continuous usage its prompt tokens and the tokens sent."""

    __slots__ = ("conn", "left", "prompt", "sent", "shape", "tail")

    def __init__(self, conn: Connection, shape: Shape, left: int, tail: bytes, prompt: int | None = None) -> None:
        self.conn, self.shape, self.left, self.tail, self.prompt, self.sent = conn, shape, left, tail, prompt, 0

    def step(self) -> bool:
        """Write the next token; False once the answer is complete."""
        self.left -= 1
        if self.left > 0:
            if self.prompt is None:
                self.conn.write(self.shape.token)
            else:
                self.sent += 1
                self.conn.write(frame(self.shape.token_usage % (self.prompt, self.sent, self.prompt + self.sent)))
            return True
        self.conn.write(self.tail)
        self.conn.finished()
        return False


class Pump:
    """Writes one chunk of every open stream per round: a round every `itl` seconds (0: every loop iteration)."""

    def __init__(self, itl: float) -> None:
        self.itl = itl
        self.streams: list[Stream] = []
        self.running = False
        self.next = 0.0

    def add(self, stream: Stream) -> None:
        if stream.conn.closed or not stream.step():
            return
        self.streams.append(stream)
        if not self.running:
            self.running = True
            loop = asyncio.get_running_loop()
            if self.itl:
                self.next = loop.time() + self.itl
                loop.call_at(self.next, self.round)
            else:
                loop.call_soon(self.round)

    def round(self) -> None:
        self.streams = [s for s in self.streams if not s.conn.closed and (s.conn.paused or s.step())]
        if not self.streams:
            self.running = False
            return
        loop = asyncio.get_running_loop()
        if self.itl:
            self.next = max(self.next + self.itl, loop.time())
            loop.call_at(self.next, self.round)
        else:
            loop.call_soon(self.round)


class Connection(asyncio.Protocol):
    """One client connection: parses requests as they come, answers one at a time (keep-alive)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = b""
        self.transport: Any = None
        self.write: Any = None
        self.closed = False
        self.paused = False
        self.busy = False  # a stream is being written; later requests wait in `buf`

    def connection_made(self, transport: Any) -> None:
        self.transport, self.write = transport, transport.write

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.next_request()

    def finished(self) -> None:
        self.busy = False
        if self.buf:
            asyncio.get_running_loop().call_soon(self.next_request)

    def next_request(self) -> None:
        while not self.busy and not self.closed and (end := self.buf.find(b"\r\n\r\n")) >= 0:
            first, crlf, fields = self.buf[:end].partition(b"\r\n")
            fields = crlf + fields
            lower = fields.lower()
            length = int(header(fields, lower, b"content-length:") or 0)
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
            method, path = first.split(b" ")[:2]
            auth = header(fields, lower, b"authorization:")
            self.server.handle(self, method, path, auth, body)


class Server:
    """The routes and the shared pump."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.auth = f"Bearer {args.api_key}".encode() if args.api_key else None
        self.shapes = {True: Shape(True, args.model), False: Shape(False, args.model)}
        self.models = plain("200 OK", {"object": "list", "data": [{"id": args.model, "object": "model"}]})
        self.pump = Pump(args.itl_ms / 1000)

    def handle(self, conn: Connection, method: bytes, path: bytes, auth: bytes, body: bytes) -> None:
        if method == b"GET" and path == b"/health":
            conn.write(plain("200 OK", {}))
        elif self.auth is not None and auth != self.auth:
            conn.write(plain("401 Unauthorized", {"error": "Unauthorized"}))
        elif method == b"GET" and path.rstrip(b"/") == b"/v1/models":
            conn.write(self.models)
        elif method == b"POST" and path in (b"/v1/chat/completions", b"/v1/completions"):
            self.start(conn, path.endswith(b"chat/completions"), loads(body))
        else:
            conn.write(plain("404 Not Found", {"error": f"no route {method.decode()} {path.decode()}"}))

    def start(self, conn: Connection, chat: bool, body: dict) -> None:
        """Write the head (and role chunk) now, the first token after --ttft-ms, the rest from the pump."""
        shape = self.shapes[chat]
        n = max(1, int(body.get("max_tokens") or body.get("max_completion_tokens") or 16))
        prompt_tokens = None
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            prompt = body.get("prompt") or " ".join(str(m.get("content", "")) for m in body.get("messages") or [])
            prompt_tokens = max(1, len(str(prompt).split()))
        continuous = prompt_tokens is not None and bool(options.get("continuous_usage_stats"))
        conn.busy = True
        conn.write(shape.start)
        stream = Stream(conn, shape, n, shape.tail(prompt_tokens, n, continuous), prompt_tokens if continuous else None)
        if self.args.ttft_ms:
            asyncio.get_running_loop().call_later(self.args.ttft_ms / 1000, self.pump.add, stream)
        else:
            self.pump.add(stream)


async def serve(args: argparse.Namespace) -> None:
    server = Server(args)
    listener = await asyncio.get_running_loop().create_server(lambda: Connection(server), args.host, args.port,
                                                              backlog=4096)
    print(f"stand-in OpenAI server on http://{args.host}:{args.port}/v1 (model {args.model})", flush=True)
    async with listener:
        await listener.serve_forever()


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
