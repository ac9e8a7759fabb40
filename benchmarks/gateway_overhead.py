#!/usr/bin/env python3
"""What the gateway costs: the same load through `llmnest gateway serve` and straight to the upstream.

1. The demo engine (real vLLM, SmolLM2-135M): rounds of 8 concurrent streams in pairs, one round
   straight and one through the gateway (the order swapped every pair, so drift in the engine's speed
   hits both sides alike): mean TTFT added and output tokens/s through the gateway / straight. TTFT
   moves between rounds by whole engine steps (a request that reaches the engine just after a step
   began waits for the next one, hundreds of ms on a CPU), so its mean is printed with its standard
   error, which only thousands of pairs would bring near the bar. Rounds with half of the streams
   through the gateway (the same engine batches for both halves) give the decode-rate ratio free of
   the engine's drift. One-token streams one at a time (alternating) show the TTFT a lone request
   pays, end to end and in front of the engine: client TTFT minus vLLM's own (its TTFT histogram
   starts when its API server has taken the request in), which the engine's jitter does not move.
2. The stand-in upstream (benchmarks/standin_server.py: no model, vLLM-shaped chunks with per-chunk
   usage), where nothing but the gateway moves, in the same pairs of rounds:
   - at the demo engine's pace (its lone-request TTFT and its 8-stream token gap, measured straight
     at the start): the mean TTFT the gateway adds to 8 concurrent streams, the bar;
   - answering at once: the same, in the worst case (the first streams' chunks are relayed while the
     others start);
   - long streams as fast as it can send them: chunks/s through the gateway / straight, and the
     gateway process's CPU time (user + system, from /proc) per streamed chunk.

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
import math
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


def engine_ttft_total(metrics_url: str) -> tuple[float, float]:
    """vLLM's own TTFT histogram so far, (sum of seconds, count): from the moment its API server took the
    request in to its first token, so the hop in front of it is not in it."""
    total = count = 0.0
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("vllm:time_to_first_token_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:time_to_first_token_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def in_front(side_streams: dict, before: tuple[float, float], after: tuple[float, float]) -> float:
    """Mean client TTFT minus the engine's own mean TTFT over the same requests: what lies in front of the
    engine (HTTP, and the gateway when there is one), free of the engine's step-to-step jitter."""
    if after[1] - before[1] != side_streams["n"]:
        raise SystemExit(f"vLLM counted {after[1] - before[1]:.0f} first tokens for {side_streams['n']} requests")
    return side_streams["ttft"] - (after[0] - before[0]) / (after[1] - before[1])


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
            "chunks": sum(len(r.chunks) for r in records), "wall": wall, "n": n}


def pairs(label: str, columns: list[tuple[str, str, str]], direct: Side, gateway: Side, model: str, gw_pid: int,
          count: int, n: int, max_tokens: int) -> dict:
    """`count` pairs of rounds, one straight and one through the gateway, the order swapped every pair
    (after a round each way that is not counted: connections opened, the same prompts in the engine's
    prefix cache for every counted round). Prints each pair as it ends, then the medians, and the mean
    TTFT added with its standard error (the bar is on the mean)."""
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
    added = [r["ttft_added_ms"] for r in rows]
    median["ttft_added_mean_ms"] = statistics.mean(added)
    median["ttft_added_se_ms"] = statistics.stdev(added) / len(added) ** 0.5 if len(added) > 1 else float("nan")
    print(f"TTFT added: mean {median['ttft_added_mean_ms']:+.2f} ms, standard error {median['ttft_added_se_ms']:.2f} ms")
    return median


def mixed(direct: Side, gateway: Side, model: str, rounds: int, n: int, max_tokens: int) -> dict:
    """Rounds of n concurrent streams, half straight and half through the gateway (which half swaps every
    round), all leaving at once: both halves share the engine's batches, so its speed, which a busy machine
    moves by more than the bar between rounds, cancels out. Per round: each stream's decode rate (output
    tokens after the first / time from first to last token), through the gateway / straight; the median
    over rounds. (TTFT is not compared here: of two requests that leave together, the straight one reaches
    the engine's queue first and the other waits behind it, one engine step on this machine.)"""
    async def one(r: int) -> float:
        clients = [Client(side[0], side[1], model, endpoint="completions", ignore_eos=True, temperature=0)
                   for side in (direct, gateway)]
        async with clients[0], clients[1]:
            t0 = time.perf_counter()
            records = await asyncio.gather(*(clients[(i + r) % 2].send(
                Prompt(f"Write a short story about a {WORDS[i % len(WORDS)]} who learns to fly.", 0, max_tokens),
                RequestRecord(i, 0.0, 0, max_tokens), t0) for i in range(n)))
        if not all(rec.ok for rec in records):
            raise SystemExit(f"a stream failed: {next(rec.detail for rec in records if not rec.ok)}")
        rate = {k: statistics.mean(((rec.output_tokens or 0) - 1) / (rec.chunks[-1] - rec.chunks[0])
                                   for rec in records if (rec.index + r) % 2 == k) for k in (0, 1)}
        return rate[1] / rate[0]

    asyncio.run(one(0))  # not counted: connections, prefix cache
    print(f"\n== demo engine, {n} concurrent streams, half of them through the gateway (same engine batches)")
    print(f"{'round':>5}{'decode tok/s ratio':>22}{'load':>8}", flush=True)
    ratios, loads = [], []
    for r in range(rounds):
        before = load()
        ratios.append(asyncio.run(one(r)))
        loads.append((before + load()) / 2)
        print(f"{r + 1:5}{ratios[-1]:22.3f}{loads[-1]:8.1f}", flush=True)
    median = {"tokens_ratio": statistics.median(ratios), "load": statistics.median(loads)}
    print(f"{'med.':>5}{median['tokens_ratio']:22.3f}{median['load']:8.1f}")
    return median


def sequential_ttft(direct: Side, gateway: Side, model: str, requests: int, metrics_url: str | None = None) -> dict:
    """One-token streams one at a time, alternating: the TTFT the gateway adds to a lone request (key
    check, limits, routing, one more hop) with no queueing; with `metrics_url`, also what lies in front of
    the engine (client TTFT minus vLLM's own, per request), which the engine's jitter does not move."""
    async def run() -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
        for i in range(requests):
            for side in ("direct", "gateway"):
                engine = engine_ttft_total(metrics_url) if metrics_url else None
                got = await streams(direct if side == "direct" else gateway, model, 1, 1, i)
                front = in_front(got, engine, engine_ttft_total(metrics_url)) if engine is not None else 0.0
                out[side].append((got["ttft"], front))
        return out

    before = load()
    got = asyncio.run(run())
    d, g = (1000 * statistics.median(t for t, _ in got[s]) for s in ("direct", "gateway"))
    out = {"direct_ms": d, "gateway_ms": g, "added_ms": g - d, "load": (before + load()) / 2}
    if metrics_url:
        fd, fg = (1000 * statistics.mean(f for _, f in got[s]) for s in ("direct", "gateway"))
        out.update(direct_front_ms=fd, gateway_front_ms=fg, front_added_ms=fg - fd)
    return out


PACED_TOKENS = 4  # TTFT is settled by then; short streams make many pairs cheap


def engine_pace(side: Side, model: str, n: int, max_tokens: int) -> tuple[float, float]:
    """The demo engine's pace, straight (ms): a lone 1-token request's TTFT, and the gap between tokens
    with n concurrent streams."""
    lone = statistics.median(asyncio.run(streams(side, model, 1, 1, i))["ttft"] for i in range(3))
    got = asyncio.run(streams(side, model, n, max_tokens))
    return 1000 * lone, 1000 * (got["wall"] - got["ttft"]) / (max_tokens - 1)


def start_standin(model: str, pace: tuple[float, float] | None = None) -> tuple[subprocess.Popen, Side]:
    """The stand-in upstream serving `model`: as fast as it can, or at `pace` (TTFT ms, ITL ms)."""
    port = free_port()
    timing = ["--ttft-ms", f"{pace[0]:.1f}", "--itl-ms", f"{pace[1]:.1f}"] if pace else []
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "standin_server.py"), "--port", str(port),
                             "--model", model, "--api-key", "internal", *timing], stdout=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc, (f"http://127.0.0.1:{port}/v1", "internal")


def start_gateway(env: dict[str, str], upstreams: list[dict], tmp: Path) -> tuple[subprocess.Popen, str, str]:
    config = tmp / "upstreams.json"
    config.write_text(json.dumps(upstreams))
    key = json.loads(cli(env, "keys", "create", f"bench{free_port()}", "--json").stdout)["key"]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmnest", "gateway", "serve", "--port", str(port),
                             "--upstreams", str(config)], env=env, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc, f"http://127.0.0.1:{port}/v1", key


def summary(results: dict) -> None:
    """The bar's figures side by side."""
    print("\n== the bar (issue 11): medians over pairs or rounds, TTFT added as a mean ± 2 standard errors")
    print(f"{'figure':50}{'straight':>11}{'gateway':>11}{'ratio / added':>18}{'load':>6}")

    def row(figure: str, straight: str, gateway: str, ratio: str, at: float, note: str = "") -> None:
        print(f"{figure:50}{straight:>11}{gateway:>11}{ratio:>18}{at:6.1f}{'   ' + note if note else ''}")

    def ttft_row(figure: str, r: dict, digits: int, note: str) -> None:
        """Mean TTFT straight and through the gateway, and the mean added ± 2 standard errors."""
        mean, se = r["ttft_added_mean_ms"], r["ttft_added_se_ms"]
        row(figure, f"{r['direct_ttft_ms']:.{digits}f}", f"{r['direct_ttft_ms'] + mean:.{digits}f}",
            f"{mean:+.{digits}f}" + ("" if math.isnan(se) else f"±{2 * se:.{digits}f}"), r["load"], note)

    f, ft, fs = results["fast"], results["fast_ttft"], results["fast_sequential"]
    if "paced_ttft" in results:
        ttft_row("stand-in at the engine's pace, 8 streams: TTFT", results["paced_ttft"], 2, "(bar: <= +5 ms)")
    ttft_row("stand-in answering at once, 8 streams: TTFT", ft, 2, "(worst case: relaying while the others start)")
    row("stand-in, lone 1-token stream: TTFT (ms)", f"{fs['direct_ms']:.2f}", f"{fs['gateway_ms']:.2f}",
        f"{fs['added_ms']:+.2f}", fs["load"])
    row("stand-in, 8 streams: chunks/s", f"{f['direct_chunks_per_s']:.0f}",
        f"{f['direct_chunks_per_s'] * f['chunks_ratio']:.0f}", f"{f['chunks_ratio']:.3f}x", f["load"])
    row("stand-in: gateway CPU per streamed chunk (us)", "", f"{f['cpu_us_per_chunk']:.1f}", "", f["load"])
    if "engine" in results:
        e, m, s = results["engine"], results["engine_mixed"], results["engine_sequential"]
        ttft_row("demo engine, 8 streams: mean TTFT (ms)", e, 1, "(engine steps move it by whole steps)")
        row("demo engine, lone 1-token stream: TTFT (ms)", f"{s['direct_ms']:.1f}", f"{s['gateway_ms']:.1f}",
            f"{s['added_ms']:+.1f}", s["load"])
        row("  the same, in front of vLLM's own TTFT (ms)", f"{s['direct_front_ms']:.2f}", f"{s['gateway_front_ms']:.2f}",
            f"{s['front_added_ms']:+.2f}", s["load"])
        row("demo engine, 8 streams: output tokens/s", f"{e['direct_tokens_per_s']:.1f}",
            f"{e['direct_tokens_per_s'] * e['tokens_ratio']:.1f}", f"{e['tokens_ratio']:.3f}x", e["load"],
            "(bar: >= 0.97x)")
        row("  half via gateway, same batches: decode tok/s", "", "", f"{m['tokens_ratio']:.3f}x", m["load"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=6, help="pairs of rounds against the demo engine")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--mixed-rounds", type=int, default=8, help="rounds half straight, half through the gateway")
    parser.add_argument("--fast-pairs", type=int, default=6)
    parser.add_argument("--ttft-pairs", type=int, default=40, help="pairs of short rounds against the stand-in (TTFT)")
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
            fast_proc, fast = start_standin("fast")
            procs.append(fast_proc)
            upstreams = [{"model": "fast", "replica_id": "fast", "base_url": fast[0], "internal_key": fast[1]}]
            engine, metrics_url = None, None
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
                metrics_url = engine[0].removesuffix("/v1") + "/metrics"
                pace = engine_pace((engine[0], engine[1]), engine[2], args.streams, args.max_tokens)
                paced_proc, paced = start_standin("paced", pace)
                procs.append(paced_proc)
                upstreams.append({"model": "paced", "replica_id": "paced", "base_url": paced[0],
                                  "internal_key": paced[1]})
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
                                                               args.sequential, metrics_url)
                results["paced_ttft"] = pairs(
                    f"stand-in at the demo engine's pace (first token after {pace[0]:.0f} ms, then one every "
                    f"{pace[1]:.0f} ms): {args.streams} concurrent streams of {PACED_TOKENS} tokens",
                    [("straight TTFT ms", "direct_ttft_ms", ".2f"), ("TTFT added ms", "ttft_added_ms", "+.2f")],
                    paced, gateway, "paced", gw.pid, args.ttft_pairs, args.streams, PACED_TOKENS)
                results["paced_ttft"]["pace_ms"] = pace
            results["fast"] = pairs(
                f"fast stand-in: {args.streams} concurrent streams of {args.fast_max_tokens} chunks",
                [("straight chunks/s", "direct_chunks_per_s", ".0f"), ("chunks/s ratio", "chunks_ratio", ".3f"),
                 ("gateway CPU us/chunk", "cpu_us_per_chunk", ".1f")],
                fast, gateway, "fast", gw.pid, args.fast_pairs, args.streams, args.fast_max_tokens)
            results["fast_ttft"] = pairs(
                f"fast stand-in: {args.streams} concurrent streams of {args.max_tokens} chunks",
                [("straight TTFT ms", "direct_ttft_ms", ".2f"), ("TTFT added ms", "ttft_added_ms", "+.2f")],
                fast, gateway, "fast", gw.pid, args.ttft_pairs, args.streams, args.max_tokens)
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
