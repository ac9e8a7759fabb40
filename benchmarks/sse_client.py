#!/usr/bin/env python3
"""The two streaming clients and SSE parsers (the gateway's to its engines, the benchmark's) at one
revision against another, side by side in one run, as new / old ratios.

Against the fast stand-in (benchmarks/standin_server.py, vLLM-shaped chunks as fast as it can send
them, in a process of its own), each path in a child process of its own, the two revisions alternating:

- gateway: `UpstreamClient.post` and `StreamTap.feed` over every read, as the relay does (without the
  client side), on the body the gateway sends (usage in every chunk);
- bench: `bench.request.Client.send`, one RequestRecord per request.

Figures per path: requests/s at `--concurrency` streams and the child's CPU (user + system) per
streamed token (median of the repeats); the SSE parser alone on one captured stream body, fed in
reads of 8 whole events and in 1,000-byte cuts (events split anywhere); and the client's connection
(HTTP framing, per-read handling) with that parser on the whole HTTP answer (one chunk per event), fed
by hand one chunk a read and 8 chunks a read: MB/s, both revisions in this process (the old one
imported as `llmnest_old`), alternating in 20 ms windows, the best window of each; and the CPU per
short request (4 tokens, back to back over one kept-alive connection to an in-process server),
alternating batches, the least of each. The old revision's
`src/` is checked out with `git archive` into a temporary directory; the new one is this checkout's.
Each repeat's pair of runs is printed as a ratio too: on a machine busy with other work they scatter
far more than the medians (run `--old HEAD` on a clean checkout to see the noise of identical code).

    python benchmarks/sse_client.py [--old main] [--tokens 256] [--requests 300] [--concurrency 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHORT_EVENTS = [b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"standin","choices":'
                b'[{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]}\n\n'] * 4 + [
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":4,"total_tokens":5}}\n\n',
    b"data: [DONE]\n\n"]
SHORT = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
         + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in SHORT_EVENTS) + b"0\r\n\r\n")
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
CHAT = {"model": "standin", "messages": [{"role": "user", "content": "hello"}], "stream": True}


def capture(port: int, body: dict) -> bytes:
    """One whole streamed answer's body (the chunked framing removed)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json", "Authorization": "Bearer sk-standin"})
    with urllib.request.urlopen(req) as resp:
        return resp.read()


def reads(stream: bytes) -> dict[str, list[bytes]]:
    """The body as reads of 8 whole events, and as 1,000-byte cuts."""
    events = [e + b"\n\n" for e in stream.split(b"\n\n") if e]
    return {"8 events a read": [b"".join(events[i:i + 8]) for i in range(0, len(events), 8)],
            "1000-byte cuts": [stream[i:i + 1000] for i in range(0, len(stream), 1000)]}


def http_reads(stream: bytes) -> dict[str, list[bytes]]:
    """The whole HTTP answer (one chunk per event, as the stand-in and uvicorn send it) as reads of one
    chunk (the head with the first), and of 8 chunks."""
    events = [e + b"\n\n" for e in stream.split(b"\n\n") if e]
    chunks = [b"%x\r\n%s\r\n" % (len(e), e) for e in events] + [b"0\r\n\r\n"]
    chunks[0] = HEAD + chunks[0]
    return {"1 chunk a read": chunks, "8 chunks a read": [b"".join(chunks[i:i + 8]) for i in range(0, len(chunks), 8)]}


def rates(feeders: dict[str, tuple], cuts, label: str) -> dict[str, dict[str, float]]:
    """MB/s (of SSE body) of each side's `feed_all(pieces)` (one stream read from a fresh state) per way
    `cuts(stream)` cuts it: the sides alternate in windows of 20 ms, and each keeps its best (as timeit
    does: other processes only ever make a window slower)."""
    out: dict[str, dict[str, float]] = {side: {} for side in feeders}
    for name in cuts(next(iter(feeders.values()))[1]):
        best = dict.fromkeys(feeders, 0.0)
        for _ in range(50):
            for side, (feed_all, stream) in feeders.items():
                pieces = cuts(stream)[name]
                n, start = 0, time.perf_counter()
                while (took := time.perf_counter() - start) < 0.02:
                    feed_all(pieces)
                    n += 1
                best[side] = max(best[side], n * len(stream) / took / 1e6)
        for side in feeders:
            out[side][f"{label} MB/s, {name}"] = best[side]
    return out


class Socket:
    """Stands in for the socket under a connection fed by hand (what it is asked to do costs nothing)."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def gateway_path(a: argparse.Namespace) -> tuple[int, float]:
    from llmnest.gateway.stream import StreamTap, upstream_body
    try:
        from llmnest.http1 import Client as UpstreamClient
    except ImportError:  # a revision from before the shared client
        from llmnest.gateway.upstream_client import UpstreamClient

    client, tokens = UpstreamClient(60.0), 0
    raw = json.dumps(upstream_body({**CHAT, "max_tokens": a.tokens})[0]).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-standin"}

    async def one() -> int:
        resp = await client.post(f"http://127.0.0.1:{a.port}/v1/chat/completions", raw, headers)
        tap = StreamTap(False, False)
        while data := await resp.next():
            tap.feed(data)
            if tap.done:
                await resp.finish(1.0)
                break
        return tap.completion_tokens

    async def worker(n: int) -> None:
        nonlocal tokens
        for _ in range(n):
            got = await one()  # (not `tokens += await one()`: that reads `tokens` before the await)
            tokens += got

    await asyncio.gather(*(worker(a.requests // a.concurrency) for _ in range(a.concurrency)))
    client.close()
    return a.requests // a.concurrency * a.concurrency, tokens


async def bench_path(a: argparse.Namespace) -> tuple[int, float]:
    from llmnest.bench.datasets import Prompt
    from llmnest.bench.record import RequestRecord
    from llmnest.bench.request import Client

    tokens, done = 0, 0
    async with Client(f"http://127.0.0.1:{a.port}/v1", "sk-standin", "standin", "chat") as client:
        async def worker(n: int) -> None:
            nonlocal tokens, done
            for i in range(n):
                record = await client.send(Prompt("hello", 1, a.tokens), RequestRecord(i, 0.0, 1, a.tokens),
                                           time.perf_counter())
                if not record.ok:
                    raise SystemExit(f"bench request failed: {record.error} {record.detail}")
                tokens += record.output_tokens or 0
                done += 1

        await asyncio.gather(*(worker(a.requests // a.concurrency) for _ in range(a.concurrency)))
    return done, tokens


def gateway_parser(package: str, stream: bytes, tokens: int):
    StreamTap = importlib.import_module(f"{package}.gateway.stream").StreamTap

    def feed_all(pieces: list[bytes]) -> None:
        tap = StreamTap(False, False)
        for piece in pieces:
            tap.feed(piece)
        assert tap.done and tap.completion_tokens == tokens

    return feed_all


def bench_parser(package: str, stream: bytes, tokens: int):
    RequestRecord = importlib.import_module(f"{package}.bench.record").RequestRecord
    EventReader = importlib.import_module(f"{package}.bench.stream").EventReader

    def feed_all(pieces: list[bytes]) -> None:
        reader = EventReader(RequestRecord(0, 0.0, 1, tokens), True, 0.0)
        for piece in pieces:
            reader.feed(piece, 1.0)
        assert reader.done and reader.record.output_tokens == tokens

    return feed_all


def gateway_client(package: str, stream: bytes, tokens: int):
    """The gateway's connection and stream tap on the whole HTTP answer, taking the body after each read
    as the relay does (the shared client, or the gateway's own before it)."""
    StreamTap = importlib.import_module(f"{package}.gateway.stream").StreamTap
    try:
        Connection = importlib.import_module(f"{package}.http1").Connection
    except ImportError:
        Connection = importlib.import_module(f"{package}.gateway.upstream_client")._Connection

    def feed_all(pieces: list[bytes]) -> None:
        conn, tap = Connection(), StreamTap(False, False)
        conn.connection_made(Socket())
        if hasattr(conn, "send"):
            conn.send(b"", None)
        for piece in pieces:
            conn.data_received(piece)
            if conn.body:
                tap.feed(conn.take())
        assert conn.complete and tap.done and tap.completion_tokens == tokens

    return feed_all


def bench_client(package: str, stream: bytes, tokens: int):
    """The benchmark's connection and event reader on the whole HTTP answer (the shared client with the
    reader as its sink, or the bench's own connection and framing parser before it)."""
    RequestRecord = importlib.import_module(f"{package}.bench.record").RequestRecord
    bench_stream = importlib.import_module(f"{package}.bench.stream")
    request = importlib.import_module(f"{package}.bench.request")
    try:
        Connection = importlib.import_module(f"{package}.http1").Connection
    except ImportError:
        Connection = None

    def feed_all(pieces: list[bytes]) -> None:
        reader = bench_stream.EventReader(RequestRecord(0, 0.0, 1, tokens), True, 0.0)
        if Connection is not None:
            conn = Connection(request.COALESCE_S)
            conn.connection_made(Socket())
            conn.send(b"", reader.feed)
        else:
            conn = request._Connection()
            conn.connection_made(Socket())
            conn.begin(bench_stream.Response(reader), asyncio.get_running_loop().create_future(), b"")
        for piece in pieces:
            conn.data_received(piece)
        assert reader.done and reader.record.output_tokens == tokens

    return feed_all


async def client_rates(packages: dict[str, str], streams: dict[str, bytes], tokens: int) -> dict:
    """Per path and side: connection + parser MB/s on the whole HTTP answer, in a running loop (the
    connections schedule their timers on it)."""
    return {path: rates({side: (make(package, streams[path], tokens), streams[path])
                         for side, package in packages.items()}, http_reads, "client")
            for path, make in (("gateway", gateway_client), ("bench", bench_client))}


class Answer(asyncio.Protocol):
    """An in-process server answering every request at once with one short stream (4 tokens, usage)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            length = int(self.buf.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.transport.write(SHORT)


async def request_costs(packages: dict[str, str]) -> dict:
    """Per path and side: the least CPU µs per request (server included, the same for both) over 40
    alternating batches of 50 sequential short requests, over one kept-alive connection."""
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    runs: dict[str, dict] = {"gateway": {}, "bench": {}}
    for side, package in packages.items():
        request = importlib.import_module(f"{package}.bench.request")
        Prompt = importlib.import_module(f"{package}.bench.datasets").Prompt
        RequestRecord = importlib.import_module(f"{package}.bench.record").RequestRecord
        try:
            upstream = importlib.import_module(f"{package}.http1").Client(60.0)
        except ImportError:
            upstream = importlib.import_module(f"{package}.gateway.upstream_client").UpstreamClient(60.0)
        client = await request.Client(url, "sk-standin", "standin").__aenter__()

        async def bench(client=client, Prompt=Prompt, RequestRecord=RequestRecord) -> None:
            for i in range(50):
                record = await client.send(Prompt("hi", 1, 4), RequestRecord(i, 0.0, 1, 4), 0.0)
                assert record.ok and record.output_tokens == 4, (record.error, record.detail)

        async def gateway(upstream=upstream) -> None:
            for _ in range(50):
                resp = await upstream.post(url + "/chat/completions", b"{}", {"Content-Type": "application/json"})
                while await resp.next():
                    pass
                resp.close()

        runs["gateway"][side], runs["bench"][side] = gateway, bench
    out: dict[str, dict[str, dict[str, float]]] = {}
    for path, sides in runs.items():
        best = dict.fromkeys(sides, 1e9)
        for _ in range(40):
            for side, run in sides.items():
                start = time.process_time()
                await run()
                best[side] = min(best[side], (time.process_time() - start) / 50 * 1e6)
        out[path] = {side: {"CPU µs per short request": best[side]} for side in sides}
    server.close()
    return out


def run_uvloop(coro):
    """`coro` run on uvloop (as the gateway and the bench run) when it is installed."""
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def child(a: argparse.Namespace) -> None:
    """One path at the revision on PYTHONPATH: its figures as one JSON line."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    import llmnest.bench.request
    import llmnest.gateway.relay
    import llmnest.gateway.stream  # noqa: F401  (imported before the clock starts)

    run = {"gateway": gateway_path, "bench": bench_path}[a.child]
    cpu, wall = time.process_time(), time.perf_counter()
    requests, tokens = asyncio.run(run(a))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    figures = {"requests/s": requests / wall, "client CPU µs per token": cpu / tokens * 1e6}
    print(json.dumps(figures))


def checkout(rev: str, into: Path) -> Path:
    """`rev`'s src/ in `into` (git archive), for PYTHONPATH."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", default="main", help="the revision to compare with (git rev)")
    p.add_argument("--tokens", type=int, default=256, help="tokens per streamed answer")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", choices=["gateway", "bench"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(ROOT / "src"))
    from bench_vs_vllm import free_port, start_standin, stop_server

    with tempfile.TemporaryDirectory() as tmp:
        sides = {"old": checkout(a.old, Path(tmp)), "new": ROOT / "src"}
        shutil.copytree(sides["old"] / "llmnest", Path(tmp) / "pkg" / "llmnest_old")
        sys.path.insert(0, str(Path(tmp) / "pkg"))
        packages = {"old": "llmnest_old", "new": "llmnest"}
        port = free_port()
        server = start_standin(port, 0, Path(tmp) / "standin.log")
        results: dict[tuple[str, str], list[dict]] = {}
        try:
            for rep in range(a.repeat):
                for path in ("gateway", "bench"):
                    for side in (("old", "new") if rep % 2 == 0 else ("new", "old")):
                        env = {**os.environ, "PYTHONPATH": str(sides[side])}
                        out = subprocess.run([sys.executable, __file__, "--child", path, "--port", str(port),
                                              "--tokens", str(a.tokens), "--requests", str(a.requests),
                                              "--concurrency", str(a.concurrency)],
                                             env=env, check=True, capture_output=True, text=True).stdout
                        results.setdefault((path, side), []).append(json.loads(out.splitlines()[-1]))
            from llmnest.gateway.stream import upstream_body

            streams = {"gateway": capture(port, upstream_body({**CHAT, "max_tokens": a.tokens})[0]),
                       "bench": capture(port, {**CHAT, "max_tokens": a.tokens, "stream_options": {"include_usage": True}})}
            for path, make in (("gateway", gateway_parser), ("bench", bench_parser)):
                parsed = rates({side: (make(packages[side], streams[path], a.tokens), streams[path])
                                for side in sides}, reads, "parse")
                for side in sides:
                    results[(path, side)][0].update(parsed[side])
            for path, framed in asyncio.run(client_rates(packages, streams, a.tokens)).items():
                for side in sides:
                    results[(path, side)][0].update(framed[side])
            for path, costs in run_uvloop(request_costs(packages)).items():
                for side in sides:
                    results[(path, side)][0].update(costs[side])
        finally:
            stop_server(server)
    print(f"old = {a.old}, new = this checkout; {a.requests} requests x {a.tokens} tokens, {a.concurrency} "
          f"streams; median of {a.repeat}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'path':8} {'figure':34} {'old':>10} {'new':>10} {'new/old':>8}  new/old of each repeat's pair")
    for path in ("gateway", "bench"):
        for name in results[(path, "old")][0]:
            pairs = [(o[name], n[name]) for o, n in zip(results[(path, "old")], results[(path, "new")]) if name in o]
            old = statistics.median(o for o, _ in pairs)
            new = statistics.median(n for _, n in pairs)
            spread = " ".join(f"{n / o:.2f}" for o, n in pairs) if len(pairs) > 1 else ""
            print(f"{path:8} {name:34} {old:10.2f} {new:10.2f} {new / old:8.3f}  {spread}")


if __name__ == "__main__":
    main()
