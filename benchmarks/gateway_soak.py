#!/usr/bin/env python3
"""The gateway under a long mixed load of careful and careless clients, on loopback only, for a bounded
time: does its memory stay flat, does it keep answering, does it count every refusal?

`llmnest gateway serve --upstreams` in front of the stand-in (benchmarks/standin_server.py at 10 ms a
token). Keyed clients (a key with rpm, tpm, a budget and a concurrency cap, all far above the load)
stream and ask non-streamed chats at `--rate` per second; every interval, from other loopback
addresses, careless clients leave 20 half-sent requests, send one 1 MiB header, abandon 5 non-streamed
requests after 50 ms, and send 10 malformed requests and one deeply nested JSON body. Each interval
prints the gateway's resident memory and open files, its CPU, the keyed requests answered and failed,
their latency, and the refusals /metrics counted.

    python benchmarks/gateway_soak.py [--minutes 2] [--rate 20] [--interval 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.gateway_overhead import cli, cpu_seconds, wait_http  # noqa: E402
from tests.conftest import free_port  # noqa: E402

MAX_MINUTES = 60


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def refusals(url: str) -> dict[str, int]:
    out = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("llmnest_refused_requests_total{"):
            out[line.split('"')[1]] = int(float(line.rsplit(" ", 1)[1]))
    return out


async def raw(port: int, source: str, data: bytes, wait: float = 0.0) -> None:
    """Send `data` from a loopback `source` address, wait, and leave."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(data)
        await writer.drain()
        if wait:
            await asyncio.sleep(wait)
        writer.close()
    except OSError:
        pass


async def careless(port: int, url: str, key: str, tasks: set[asyncio.Task]) -> None:
    """One interval's careless clients (left running in the background)."""
    def later(coro) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    for _ in range(20):
        later(raw(port, "127.0.0.2", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", wait=15))
    later(raw(port, "127.0.0.3", b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"))
    for _ in range(10):
        later(raw(port, "127.0.0.4", bytes(random.getrandbits(8) for _ in range(200)) + b"\r\n\r\n", wait=0.5))
    nested = b'{"model": "standin", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    later(raw(port, "127.0.0.5", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
              + key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(nested) + nested, wait=1))

    async def abandon() -> None:
        async with httpx.AsyncClient(timeout=0.05) as client:
            try:
                await client.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                  json={"model": "standin", "max_tokens": 200,
                                        "messages": [{"role": "user", "content": "leave"}]})
            except httpx.TimeoutException:
                pass
    for _ in range(5):
        later(abandon())


async def keyed(client: httpx.AsyncClient, url: str, key: str, stream: bool, log: list) -> None:
    body = {"model": "standin", "max_tokens": 16, "messages": [{"role": "user", "content": "hello there"}]}
    start = time.monotonic()
    try:
        if stream:
            async with client.stream("POST", url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                     json={**body, "stream": True}) as resp:
                async for _ in resp.aiter_bytes():
                    pass
                status = resp.status_code
        else:
            status = (await client.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                        json=body)).status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    log.append((status, time.monotonic() - start))


async def run(args: argparse.Namespace, url: str, port: int, key: str, pid: int) -> None:
    root = url.removesuffix("/v1")
    end = time.monotonic() + args.minutes * 60
    background: set[asyncio.Task] = set()
    print(f"{'t (s)':>6} {'RSS MiB':>8} {'fds':>5} {'CPU %':>6} {'ok':>6} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7}"
          "  refused so far (by reason)")
    started, cpu0 = time.monotonic(), cpu_seconds(pid)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        while time.monotonic() < end:
            interval_end, log = time.monotonic() + args.interval, []
            t0, c0 = time.monotonic(), cpu_seconds(pid)
            await careless(port, root, key, background)
            sent: list[asyncio.Task] = []
            while (now := time.monotonic()) < interval_end:
                sent.append(asyncio.ensure_future(keyed(client, root, key, random.random() < 0.5, log)))
                await asyncio.sleep(random.expovariate(args.rate))
            await asyncio.gather(*sent)
            ok = [d for s, d in log if s == 200]
            failed = len(log) - len(ok)
            q = statistics.quantiles(ok, n=100) if len(ok) > 2 else [0.0] * 99
            cpu = 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
            why = sorted({str(s) for s, _ in log if s != 200})
            print(f"{time.monotonic() - started:6.0f} {rss_mib(pid):8.1f} {open_files(pid):5d} {cpu:6.1f} {len(ok):6d}"
                  f" {failed:6d} {1000 * q[49]:7.1f} {1000 * q[98]:7.1f}  {json.dumps(refusals(root))}"
                  f"{' failures: ' + ', '.join(why) if why else ''}", flush=True)
        for task in background:
            task.cancel()
    print(f"gateway CPU over the run: {cpu_seconds(pid) - cpu0:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=2.0, help=f"how long (at most {MAX_MINUTES})")
    p.add_argument("--rate", type=float, default=20.0, help="keyed requests per second")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between report lines")
    args = p.parse_args()
    args.minutes = min(args.minutes, MAX_MINUTES)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LLMNEST_HOME": tmp, "PYTHONPATH": str(REPO / "src"),
               "LLMNEST_GATEWAY_HEADER_TIMEOUT_S": "5"}
        env.pop("LLMNEST_GATEWAY_DB", None)
        sport, gport = free_port(), free_port()
        standin = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "standin_server.py"), "--port",
                                    str(sport), "--model", "standin", "--itl-ms", "10"], stdout=subprocess.DEVNULL)
        gateway = None
        try:
            wait_http(f"http://127.0.0.1:{sport}/health")
            (Path(tmp) / "up.json").write_text(json.dumps([{"model": "standin", "base_url": f"http://127.0.0.1:{sport}/v1"}]))
            key = json.loads(cli(env, "keys", "create", "soak", "--rpm", "100000", "--tpm", "100000000",
                                 "--max-concurrency", "1000", "--token-budget", "1000000000", "--budget-period",
                                 "day", "--json").stdout)["key"]
            gateway = subprocess.Popen([sys.executable, "-m", "llmnest", "gateway", "serve", "--port", str(gport),
                                        "--upstreams", str(Path(tmp) / "up.json")], env=env, stderr=subprocess.DEVNULL)
            wait_http(f"http://127.0.0.1:{gport}/health")
            print(f"soak: {args.minutes:g} min, {args.rate:g} keyed req/s (half streamed), careless clients every"
                  f" {args.interval:g} s; gateway pid {gateway.pid}")
            asyncio.run(run(args, f"http://127.0.0.1:{gport}/v1", gport, key, gateway.pid))
            print(f"gateway still the same process: {gateway.poll() is None}")
        finally:
            for proc in (gateway, standin):
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=30)


if __name__ == "__main__":
    main()
