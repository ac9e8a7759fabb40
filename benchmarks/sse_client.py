#!/usr/bin/env python3
"""The two streaming clients and SSE parsers (the gateway's to its engines, the benchmark's) at one
revision against another, side by side in one run, as new / old ratios.

Against the fast stand-in (benchmarks/standin_server.py, vLLM-shaped chunks as fast as it can send
them, in a process of its own), each path in a child process of its own, the two revisions alternating:

- gateway: `UpstreamClient.post` and `StreamTap.feed` over every read, as the relay does (without the
  client side), on the body the gateway sends (usage in every chunk);
- bench: `bench.request.Client.send`, one RequestRecord per request.

Figures per path: requests/s at `--concurrency` streams and the child's CPU (user + system) per
streamed token (median of the repeats); and the SSE parser alone on one captured stream body, fed in
reads of 8 whole events and in 1,000-byte cuts (events split anywhere): MB/s, both revisions in this
process (the old one imported as `llmnest_old`), alternating in 20 ms windows, the best window of
each. The old revision's `src/` is checked out with `git archive` into a temporary directory; the new
one is this checkout's.

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


def parse_rates(parsers: dict[str, tuple]) -> dict[str, dict[str, float]]:
    """MB/s of each side's `feed_all(pieces)` (one stream parsed from a fresh state) per way of cutting
    it: the sides alternate in windows of 20 ms, and each keeps its best (as timeit does: other processes
    only ever make a window slower)."""
    out: dict[str, dict[str, float]] = {side: {} for side in parsers}
    for name in ("8 events a read", "1000-byte cuts"):
        best = dict.fromkeys(parsers, 0.0)
        for _ in range(50):
            for side, (feed_all, stream) in parsers.items():
                pieces = reads(stream)[name]
                n, start = 0, time.perf_counter()
                while (took := time.perf_counter() - start) < 0.02:
                    feed_all(pieces)
                    n += 1
                best[side] = max(best[side], n * len(stream) / took / 1e6)
        for side in parsers:
            out[side][f"parse MB/s, {name}"] = best[side]
    return out


async def gateway_path(a: argparse.Namespace) -> tuple[int, float]:
    from llmnest.gateway.stream import StreamTap, upstream_body
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
            tokens += await one()

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


def child(a: argparse.Namespace) -> None:
    """One path at the revision on PYTHONPATH: its figures as one JSON line."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    import llmnest.bench.request
    import llmnest.gateway.stream
    import llmnest.gateway.upstream_client  # noqa: F401  (imported before the clock starts)

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
                rates = parse_rates({side: (make(packages[side], streams[path], a.tokens), streams[path])
                                     for side in sides})
                for side in sides:
                    results[(path, side)][0].update(rates[side])
        finally:
            stop_server(server)
    print(f"old = {a.old}, new = this checkout; {a.requests} requests x {a.tokens} tokens, {a.concurrency} "
          f"streams; median of {a.repeat}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'path':8} {'figure':34} {'old':>10} {'new':>10} {'new/old':>8}")
    for path in ("gateway", "bench"):
        for name in results[(path, "old")][0]:
            old = statistics.median(r[name] for r in results[(path, "old")] if name in r)
            new = statistics.median(r[name] for r in results[(path, "new")] if name in r)
            print(f"{path:8} {name:34} {old:10.2f} {new:10.2f} {new / old:8.3f}")


if __name__ == "__main__":
    main()
