#!/usr/bin/env python3
"""What the gateway costs: the same load through `llmnest gateway serve` and straight to the upstream.

1. The demo engine (real vLLM, SmolLM2-135M): rounds of 8 concurrent streams in pairs, one round
   straight and one through the gateway (the order swapped every pair, so drift in the engine's
   speed hits both sides alike). Per pair: mean TTFT added by the gateway (ms) and output tokens/s
   through it / straight; the bar is the median over the pairs. On a busy machine the engine's own
   speed moves between rounds by more than the bar, so rounds of 8 streams with half of them through
   the gateway (the same engine batches for both halves) give the same two figures free of that
   drift. One-token streams one at a time (alternating) show the TTFT a lone request pays.
2. The fast stand-in upstream (benchmarks/standin_server.py: no model, vLLM-shaped chunks with
   per-chunk usage, as fast as the loop can send them), so the gateway's own cost shows: streamed
   chunks/s through the gateway / straight, and the gateway process's CPU time (user + system, from
   /proc) per streamed chunk.

The gateway runs as its own process, as in production (SQLite usage, in-memory limits, a key with no
limits); the client is llmnest's own streaming client (a raw-socket reader, a few µs per chunk). The
load average is printed with each figure: other processes on the machine move the engine's figures.
Without --base-url the script deploys the demo with `llmnest up` in a temporary LLMNEST_HOME and
removes it at the end.

    .venv/bin/python benchmarks/gateway_overhead.py [--pairs 6] [--max-tokens 32] [--skip-engine]
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
sys.path.insert(0, str(REPO / "src"))
from llmnest.bench.datasets import Prompt  # noqa: E402
from llmnest.bench.record import RequestRecord  # noqa: E402
from llmnest.bench.request import Client  # noqa: E402
from tests.conftest import MODELS_CACHE, free_port  # noqa: E402

WORDS = ("cat", "teacher", "robot", "fisherman", "painter", "child", "river", "clockmaker")
Side = tuple[str, str]  # (base URL, API key)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmnest", *args], env=env, capture_output=True, text=True,
                          timeout=1500)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> float:
    return os.getloadavg()[0]


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


async def streams(side: Side, model: str, n: int, max_tokens: int, first: int = 0) -> dict:
    """n concurrent streamed completions: mean TTFT, output tokens (engine usage), chunks, wall time."""
    client = Client(side[0], side[1], model, endpoint="completions", ignore_eos=True, temperature=0)
    async with client:
        t0 = time.perf_counter()
        records = await asyncio.gather(*(client.send(
            Prompt(f"Write a short story about a {WORDS[(first + i) % len(WORDS)]} who learns to fly.", 0, max_tokens),
            RequestRecord(i, 0.0, 0, max_tokens), t0) for i in range(n)))
        wall = time.perf_counter() - t0
    failed = [r for r in records if not r.ok]
    if failed:
        raise SystemExit(f"{side[0]}: {failed[0].error} {failed[0].detail}")
    return {"ttft": statistics.mean(r.chunks[0] for r in records), "tokens": sum(r.output_tokens or 0 for r in records),
            "chunks": sum(len(r.chunks) for r in records), "wall": wall}


def pairs(label: str, columns: list[tuple[str, str, str]], direct: Side, gateway: Side, model: str, gw_pid: int,
          count: int, n: int, max_tokens: int) -> dict:
    """`count` pairs of rounds, one straight and one through the gateway, the order swapped every pair
    (after a round each way that is not counted: connections opened, the same prompts in the engine's
    prefix cache for every counted round). Prints each pair as it ends, then the medians."""
    print(f"\n== {label}")
    print("pair " + "".join(f"{title:>22}" for title, _, _ in columns) + f"{'load':>8}", flush=True)
    for side in (direct, gateway):
        asyncio.run(streams(side, model, n, max_tokens))
    rows = []
    for p in range(count):
        got: dict[str, dict] = {}
        before = load()
        for side in (("direct", "gateway") if p % 2 == 0 else ("gateway", "direct")):
            cpu = cpu_seconds(gw_pid)
            got[side] = asyncio.run(streams(direct if side == "direct" else gateway, model, n, max_tokens))
            got[side]["cpu"] = cpu_seconds(gw_pid) - cpu
        d, g = got["direct"], got["gateway"]
        rows.append({"ttft_added_ms": 1000 * (g["ttft"] - d["ttft"]), "direct_ttft_ms": 1000 * d["ttft"],
                     "gateway_ttft_ms": 1000 * g["ttft"],
                     "tokens_ratio": (g["tokens"] / g["wall"]) / (d["tokens"] / d["wall"]),
                     "direct_tokens_per_s": d["tokens"] / d["wall"],
                     "chunks_ratio": (g["chunks"] / g["wall"]) / (d["chunks"] / d["wall"]),
                     "direct_chunks_per_s": d["chunks"] / d["wall"],
                     "cpu_us_per_chunk": 1e6 * g["cpu"] / max(1, g["chunks"]), "load": (before + load()) / 2})
        row = rows[-1]
        print(f"{p + 1:4} " + "".join(f"{format(row[k], fmt):>22}" for _, k, fmt in columns) + f"{row['load']:8.1f}",
              flush=True)
    median = {k: statistics.median(r[k] for r in rows) for _, k, _ in columns}
    median["load"] = statistics.median(r["load"] for r in rows)
    print("med. " + "".join(f"{format(median[k], fmt):>22}" for _, k, fmt in columns) + f"{median['load']:8.1f}")
    return median


ARRIVAL_SPREAD_S = 0.5


def mixed(direct: Side, gateway: Side, model: str, rounds: int, n: int, max_tokens: int) -> dict:
    """Rounds of n concurrent streams, half straight and half through the gateway (which half swaps every
    round): both halves share the engine's batches, so its speed, which a busy machine moves by seconds,
    cancels out. The streams leave in twins, one straight and one through the gateway, at random moments
    over ARRIVAL_SPREAD_S: a twin's TTFT differs only by what the hop costs, including the chance that
    the hop makes it miss the engine step its sibling caught (when all 8 leave at one instant, the four
    through the gateway always reach an idle engine just after its step began, and pay a whole step;
    with streams that leave apart, TTFT depends mostly on who came first). Per round: mean TTFT (from each
    stream's own start)
    through the gateway minus straight, and per-stream output tokens/s (tokens / time to the last
    token) through the gateway / straight; medians over rounds."""
    rng = random.Random(7)
    async def one(r: int) -> dict:
        clients = [Client(side[0], side[1], model, endpoint="completions", ignore_eos=True, temperature=0)
                   for side in (direct, gateway)]
        twins = [rng.uniform(0, ARRIVAL_SPREAD_S) for _ in range(n // 2 + 1)]
        offsets = [twins[i // 2] for i in range(n)]  # streams 2k and 2k+1 (one each way) leave together

        async def arrive(i: int) -> RequestRecord:
            await asyncio.sleep(offsets[i])
            return await clients[(i + r) % 2].send(
                Prompt(f"Write a short story about a {WORDS[i % len(WORDS)]} who learns to fly.", 0, max_tokens),
                RequestRecord(i, 0.0, 0, max_tokens), time.perf_counter())

        async with clients[0], clients[1]:
            records = await asyncio.gather(*(arrive(i) for i in range(n)))
        if not all(rec.ok for rec in records):
            raise SystemExit(f"a stream failed: {next(rec.detail for rec in records if not rec.ok)}")
        group = {side: [rec for rec in records if (rec.index + r) % 2 == k] for k, side in enumerate(("d", "g"))}
        ttft = {k: statistics.mean(rec.chunks[0] for rec in v) for k, v in group.items()}
        rate = {k: statistics.mean((rec.output_tokens or 0) / rec.chunks[-1] for rec in v) for k, v in group.items()}
        return {"ttft_added_ms": 1000 * (ttft["g"] - ttft["d"]), "tokens_ratio": rate["g"] / rate["d"],
                "direct_ttft_ms": 1000 * ttft["d"]}

    asyncio.run(one(0))  # not counted: connections, prefix cache
    print(f"\n== demo engine, {n} concurrent streams, half of them through the gateway (same engine batches)")
    print(f"{'round':>5}{'straight TTFT ms':>22}{'TTFT added ms':>22}{'per-stream tok/s ratio':>24}{'load':>8}", flush=True)
    rows = []
    for r in range(rounds):
        before = load()
        row = asyncio.run(one(r))
        row["load"] = (before + load()) / 2
        rows.append(row)
        print(f"{r + 1:5}{row['direct_ttft_ms']:22.1f}{row['ttft_added_ms']:+22.1f}{row['tokens_ratio']:24.3f}"
              f"{row['load']:8.1f}", flush=True)
    median = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    print(f"{'med.':>5}{median['direct_ttft_ms']:22.1f}{median['ttft_added_ms']:+22.1f}{median['tokens_ratio']:24.3f}"
          f"{median['load']:8.1f}")
    # A stream that reaches the engine after its step has begun waits one step: TTFT added comes in
    # multiples of the engine's step, so its mean says more than its median.
    median["ttft_added_mean_ms"] = statistics.mean(row["ttft_added_ms"] for row in rows)
    print(f"{'mean':>5}{'':22}{median['ttft_added_mean_ms']:+22.1f}")
    return median


def sequential_ttft(direct: Side, gateway: Side, model: str, requests: int) -> dict:
    """One-token streams one at a time, alternating: the TTFT the gateway adds to a lone request (key
    check, limits, routing, one more hop) with no queueing."""
    async def run() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"direct": [], "gateway": []}
        for i in range(requests):
            for side in ("direct", "gateway"):
                got = await streams(direct if side == "direct" else gateway, model, 1, 1, i)
                out[side].append(got["ttft"])
        return out

    before = load()
    got = asyncio.run(run())
    d, g = (1000 * statistics.median(got[s]) for s in ("direct", "gateway"))
    return {"direct_ms": d, "gateway_ms": g, "added_ms": g - d, "load": (before + load()) / 2}


def start_gateway(env: dict[str, str], upstreams: list[dict], tmp: Path) -> tuple[subprocess.Popen, str, str]:
    config = tmp / "upstreams.json"
    config.write_text(json.dumps(upstreams))
    key = json.loads(cli(env, "keys", "create", f"bench{free_port()}", "--json").stdout)["key"]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmnest", "gateway", "serve", "--port", str(port),
                             "--upstreams", str(config)], env=env, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc, f"http://127.0.0.1:{port}/v1", key


def ms(value: float, digits: int) -> str:
    return f"{value:+.{digits}f} ms"


def summary(results: dict) -> None:
    """The bar's figures side by side."""
    print("\n== the bar (issue 11), medians")
    print(f"{'figure':46}{'straight':>12}{'gateway':>12}{'ratio / added':>16}{'load':>7}")
    if "engine" in results:
        e = results["engine"]
        print(f"{'demo engine, 8 streams: mean TTFT (ms)':46}{e['direct_ttft_ms']:12.1f}{e['gateway_ttft_ms']:12.1f}"
              f"{ms(e['ttft_added_ms'], 1):>16}{e['load']:7.1f}   (bar: <= +5 ms)")
        print(f"{'demo engine, 8 streams: output tokens/s':46}{e['direct_tokens_per_s']:12.1f}"
              f"{e['direct_tokens_per_s'] * e['tokens_ratio']:12.1f}{e['tokens_ratio']:15.3f}x{e['load']:7.1f}"
              "   (bar: >= 0.97x)")
        m = results["engine_mixed"]
        print(f"{'demo engine, 8 streams, half via gateway: TTFT':46}{m['direct_ttft_ms']:12.1f}"
              f"{m['direct_ttft_ms'] + m['ttft_added_ms']:12.1f}{ms(m['ttft_added_ms'], 1):>16}{m['load']:7.1f}"
              f"   (mean {ms(m['ttft_added_mean_ms'], 1)})")
        print(f"{'  same rounds: per-stream output tokens/s':46}{'':24}{m['tokens_ratio']:15.3f}x{m['load']:7.1f}")
        s = results["engine_sequential"]
        print(f"{'demo engine, lone 1-token stream: TTFT (ms)':46}{s['direct_ms']:12.1f}{s['gateway_ms']:12.1f}"
              f"{ms(s['added_ms'], 1):>16}{s['load']:7.1f}")
    f, s = results["fast"], results["fast_sequential"]
    print(f"{'stand-in, 8 streams: chunks/s':46}{f['direct_chunks_per_s']:12.0f}"
          f"{f['direct_chunks_per_s'] * f['chunks_ratio']:12.0f}{f['chunks_ratio']:15.3f}x{f['load']:7.1f}")
    print(f"{'stand-in: gateway CPU per streamed chunk (us)':46}{'':12}{f['cpu_us_per_chunk']:12.1f}{'':16}{f['load']:7.1f}")
    print(f"{'stand-in, lone 1-token stream: TTFT (ms)':46}{s['direct_ms']:12.2f}{s['gateway_ms']:12.2f}"
          f"{ms(s['added_ms'], 2):>16}{s['load']:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=6, help="pairs of rounds against the demo engine")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--mixed-rounds", type=int, default=8, help="rounds half straight, half through the gateway")
    parser.add_argument("--fast-pairs", type=int, default=6)
    parser.add_argument("--fast-max-tokens", type=int, default=2000)
    parser.add_argument("--sequential", type=int, default=30, help="requests each way for the lone-request TTFT")
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
            procs.append(subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "standin_server.py"), "--port",
                                           str(fake_port), "--model", "fast", "--api-key", "internal"],
                                          stdout=subprocess.DEVNULL))
            wait_http(f"http://127.0.0.1:{fake_port}/health")
            fast: Side = (f"http://127.0.0.1:{fake_port}/v1", "internal")
            upstreams = [{"model": "fast", "replica_id": "fast", "base_url": fast[0], "internal_key": fast[1]}]
            engine = None
            if not args.skip_engine:
                if args.base_url:
                    engine = (args.base_url.rstrip("/"), args.api_key, args.model)
                else:
                    print("deploying the demo engine with `llmnest up` ...", flush=True)
                    done = cli(env, "up", "--name", "gwbench", "--port", str(free_port()), "--no-gateway", "--json")
                    if done.returncode:
                        raise SystemExit(done.stderr)
                    deployed = True
                    info = json.loads(done.stdout)
                    engine = (info["base_url"], info["api_key"], info["served_model_name"])
                upstreams.append({"model": engine[2], "replica_id": "engine", "base_url": engine[0],
                                  "internal_key": engine[1]})
            gw, gw_url, key = start_gateway(env, upstreams, tmp)
            procs.append(gw)
            gateway: Side = (gw_url, key)
            results: dict = {}
            if engine:
                results["engine"] = pairs(
                    f"demo engine (real vLLM): {args.streams} concurrent streams, max_tokens {args.max_tokens}",
                    [("straight TTFT ms", "direct_ttft_ms", ".1f"), ("gateway TTFT ms", "gateway_ttft_ms", ".1f"),
                     ("TTFT added ms", "ttft_added_ms", "+.1f"), ("straight tok/s", "direct_tokens_per_s", ".1f"),
                     ("tok/s ratio", "tokens_ratio", ".3f")],
                    (engine[0], engine[1]), gateway, engine[2], gw.pid, args.pairs, args.streams, args.max_tokens)
                results["engine_mixed"] = mixed((engine[0], engine[1]), gateway, engine[2], args.mixed_rounds,
                                                args.streams, args.max_tokens)
                results["engine_sequential"] = sequential_ttft((engine[0], engine[1]), gateway, engine[2],
                                                               args.sequential)
            results["fast"] = pairs(
                f"fast stand-in: {args.streams} concurrent streams of {args.fast_max_tokens} chunks",
                [("straight chunks/s", "direct_chunks_per_s", ".0f"), ("chunks/s ratio", "chunks_ratio", ".3f"),
                 ("gateway CPU us/chunk", "cpu_us_per_chunk", ".1f")],
                fast, gateway, "fast", gw.pid, args.fast_pairs, args.streams, args.fast_max_tokens)
            results["fast_sequential"] = sequential_ttft(fast, gateway, "fast", args.sequential)
            summary(results)
            print("\n" + json.dumps(results))
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
            if deployed:
                cli(env, "down", "gwbench")


if __name__ == "__main__":
    main()
