#!/usr/bin/env python3
"""What the gateway costs: the same load through `llmnest gateway serve` and straight to the engine.

1. The demo engine (real vLLM, SmolLM2-135M): 8 concurrent streams, rounds alternating direct /
   gateway. Mean TTFT added by the gateway (ms) and output tokens/s through it / direct. On a busy
   machine the concurrent TTFT is dominated by the engine's queueing, so the script also sends
   one-token streams one at a time, alternating, and prints the median TTFT each way.
2. A fast stand-in upstream on loopback (tests/fakes/openai_upstream.py, no delay), so the gateway's
   own cost shows: streamed chunks/s through the gateway / direct, and the gateway process's CPU
   time (user + system, from /proc) per streamed chunk.

The gateway runs as its own process (SQLite usage, in-memory limits, a key with no limits).
Without --base-url the script deploys the demo with `llmnest up` in a temporary LLMNEST_HOME and
removes it at the end.

    .venv/bin/python benchmarks/gateway_overhead.py [--rounds 3] [--max-tokens 64] [--skip-engine]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.conftest import MODELS_CACHE, free_port  # noqa: E402

PROMPTS = [f"Write a short story about a {w} who learns to fly." for w in
           ("cat", "teacher", "robot", "fisherman", "painter", "child", "river", "clockmaker")]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmnest", *args], env=env, capture_output=True, text=True,
                          timeout=1500)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


async def one_stream(client: httpx.AsyncClient, url: str, key: str, model: str, prompt: str,
                     max_tokens: int) -> tuple[float, int, int]:
    """(TTFT s, completion tokens from usage, chunks) of one streamed completion."""
    start = time.perf_counter()
    ttft, chunks, tokens = None, 0, 0
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", f"{url}/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("choices"):
                chunks += 1
                ttft = ttft if ttft is not None else time.perf_counter() - start
            if obj.get("usage"):
                tokens = obj["usage"]["completion_tokens"]
    return ttft or 0.0, tokens, chunks


async def round_of(url: str, key: str, model: str, streams: int, max_tokens: int) -> dict:
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=streams * 2)) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, url, key, model, PROMPTS[i % len(PROMPTS)], max_tokens)
                                         for i in range(streams)))
        wall = time.perf_counter() - start
    return {"ttft": statistics.mean(r[0] for r in results), "tokens": sum(r[1] for r in results),
            "chunks": sum(r[2] for r in results), "wall": wall}


def compare(label: str, direct: tuple[str, str], gateway: tuple[str, str], model: str, gw_pid: int,
            rounds: int, streams: int, max_tokens: int) -> dict:
    rows: dict[str, list[dict]] = {"direct": [], "gateway": []}
    cpu = 0.0
    for _ in range(rounds):  # alternate, so drift in the engine's speed hits both sides alike
        rows["direct"].append(asyncio.run(round_of(*direct, model, streams, max_tokens)))
        before = cpu_seconds(gw_pid)
        rows["gateway"].append(asyncio.run(round_of(*gateway, model, streams, max_tokens)))
        cpu += cpu_seconds(gw_pid) - before
    out = {}
    for side, rs in rows.items():
        wall = sum(r["wall"] for r in rs)
        out[side] = {"mean_ttft_ms": 1000 * statistics.mean(r["ttft"] for r in rs),
                     "tokens_per_s": sum(r["tokens"] for r in rs) / wall,
                     "chunks_per_s": sum(r["chunks"] for r in rs) / wall, "chunks": sum(r["chunks"] for r in rs)}
    out["gateway_cpu_us_per_chunk"] = 1e6 * cpu / max(1, out["gateway"]["chunks"])
    d, g = out["direct"], out["gateway"]
    print(f"\n== {label}: {streams} concurrent streams x {rounds} rounds, max_tokens {max_tokens}")
    print(f"{'':22}{'direct':>12}{'gateway':>12}{'gateway/direct':>16}")
    print(f"{'mean TTFT (ms)':22}{d['mean_ttft_ms']:12.1f}{g['mean_ttft_ms']:12.1f}"
          f"{'+%.1f ms' % (g['mean_ttft_ms'] - d['mean_ttft_ms']):>16}")
    print(f"{'output tokens/s':22}{d['tokens_per_s']:12.1f}{g['tokens_per_s']:12.1f}"
          f"{g['tokens_per_s'] / d['tokens_per_s']:15.3f}x")
    print(f"{'streamed chunks/s':22}{d['chunks_per_s']:12.1f}{g['chunks_per_s']:12.1f}"
          f"{g['chunks_per_s'] / d['chunks_per_s']:15.3f}x")
    print(f"{'gateway CPU per chunk':22}{'':12}{out['gateway_cpu_us_per_chunk']:10.1f} us")
    return out


def added_ttft(direct: tuple[str, str], gateway: tuple[str, str], model: str, requests: int) -> dict:
    """One stream at a time, one token each, alternating direct / gateway: the TTFT the gateway adds to
    a request (key check, limits, routing, one more hop) without queueing noise."""
    async def run() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"direct": [], "gateway": []}
        async with httpx.AsyncClient(timeout=60) as client:
            for i in range(requests):
                for side, (url, key) in (("direct", direct), ("gateway", gateway)):
                    ttft, _, _ = await one_stream(client, url, key, model, PROMPTS[i % len(PROMPTS)], 1)
                    out[side].append(ttft)
        return out

    got = asyncio.run(run())
    d, g = (1000 * statistics.median(got[s]) for s in ("direct", "gateway"))
    print(f"\n== TTFT added, {requests} sequential 1-token streams each way ({model})")
    print(f"{'median TTFT (ms)':22}{d:12.2f}{g:12.2f}{'+%.2f ms' % (g - d):>16}")
    return {"direct_median_ttft_ms": d, "gateway_median_ttft_ms": g}


def start_gateway(env: dict[str, str], upstreams: list[dict], tmp: Path) -> tuple[subprocess.Popen, str, str]:
    config = tmp / "upstreams.json"
    config.write_text(json.dumps(upstreams))
    key = json.loads(cli(env, "keys", "create", f"bench{free_port()}", "--json").stdout)["key"]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmnest", "gateway", "serve", "--port", str(port),
                             "--upstreams", str(config)], env=env, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc, f"http://127.0.0.1:{port}/v1", key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--fast-max-tokens", type=int, default=2000)
    parser.add_argument("--sequential", type=int, default=40, help="requests each way for the added-TTFT probe")
    parser.add_argument("--base-url", help="an engine already running (with --api-key and --model)")
    parser.add_argument("--api-key")
    parser.add_argument("--model")
    parser.add_argument("--skip-engine", action="store_true", help="only the fast stand-in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        env = {**os.environ, "LLMNEST_HOME": str(tmp / "home"), "LLMNEST_MODELS_DIR": str(MODELS_CACHE),
               "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
        procs: list[subprocess.Popen] = []
        deployed = False
        try:
            fake_port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_upstream", "--port",
                                           str(fake_port), "--model", "fast", "--api-key", "internal"], cwd=REPO))
            wait_http(f"http://127.0.0.1:{fake_port}/health")
            fast = f"http://127.0.0.1:{fake_port}/v1"
            upstreams = [{"model": "fast", "replica_id": "fast", "base_url": fast, "internal_key": "internal"}]
            engine = None
            if not args.skip_engine:
                if args.base_url:
                    engine = (args.base_url.rstrip("/"), args.api_key, args.model)
                else:
                    print("deploying the demo engine with `llmnest up` ...", flush=True)
                    done = cli(env, "up", "--name", "gwbench", "--port", str(free_port()), "--json")
                    if done.returncode:
                        raise SystemExit(done.stderr)
                    deployed = True
                    info = json.loads(done.stdout)
                    engine = (info["base_url"], info["api_key"], info["served_model_name"])
                upstreams.append({"model": engine[2], "replica_id": "engine", "base_url": engine[0],
                                  "internal_key": engine[1]})
            gw, gw_url, key = start_gateway(env, upstreams, tmp)
            procs.append(gw)
            results = {}
            if engine:
                results["engine"] = compare("demo engine (real vLLM)", (engine[0], engine[1]), (gw_url, key),
                                            engine[2], gw.pid, args.rounds, args.streams, args.max_tokens)
            results["fast_ttft"] = added_ttft((fast, "internal"), (gw_url, key), "fast", args.sequential)
            if engine:
                results["engine_ttft"] = added_ttft((engine[0], engine[1]), (gw_url, key), engine[2], args.sequential)
            results["fast"] = compare("fast stand-in upstream", (fast, "internal"), (gw_url, key), "fast", gw.pid,
                                      args.rounds, args.streams, args.fast_max_tokens)
            print("\n" + json.dumps(results))
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
            if deployed:
                cli(env, "down", "gwbench")


if __name__ == "__main__":
    main()
