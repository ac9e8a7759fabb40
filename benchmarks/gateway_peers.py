#!/usr/bin/env python3
"""llmnest's gateway next to its peers, in front of the same stand-in engine, driven by vLLM's own
client (`vllm bench serve`), in one run: the mean TTFT each adds over the stand-in reached straight,
and the CPU each spends per request.

- llmnest: `llmnest gateway serve --upstreams`, with a key that has rpm, tpm, a concurrency cap and a
  daily budget (all far above the load, so every limit is checked and charged on every request) and
  usage written to SQLite;
- vllm-router: vLLM's Rust router (`--policy round_robin`; no keys, usage or limits);
- the LiteLLM proxy (a master key only: no database, so no per-key usage or limits), only at rates up to
  `--litellm-max-rate` (it saturates a core well below 100 req/s).

The peers install into venvs of their own under .cache/peers/ (never the product's venv); the stand-in
(benchmarks/standin_server.py) answers at 10 ms a token. Each rate runs the stand-in straight before
and after the proxies; TTFT added is a proxy's mean TTFT minus the mean of the two straight runs. CPU
per request is the proxy's process tree's user + system time over the run / requests sent.

    python benchmarks/gateway_peers.py [--rates 100,20,5] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))
from benchmarks.bench_vs_vllm import VLLM_WRAPPER  # noqa: E402
from benchmarks.gateway_overhead import cli, load, wait_http  # noqa: E402
from llmnest.home import models_dir  # noqa: E402
from tests.conftest import MODELS_CACHE, free_port  # noqa: E402

PEERS = REPO / ".cache" / "peers"
PYTHON = sys.executable
MASTER = "sk-litellm-master"


def ensure_peer(name: str, package: str, script: str) -> Path:
    """The peer's console script, installed into .cache/peers/NAME on first use."""
    exe = PEERS / name / "bin" / script
    if not exe.exists():
        print(f"installing {package} into {PEERS / name} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS / name)], check=True)
        subprocess.run([str(PEERS / name / "bin" / "pip"), "install", "-q", package], check=True)
    return exe


def tree_cpu(pid: int) -> float:
    """User + system seconds of a process and its children now."""
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def tokenizer() -> str:
    for path in (MODELS_CACHE / "smollm2-135m", models_dir() / "smollm2-135m"):
        if (path / "tokenizer.json").exists():
            return str(path)
    sys.exit("no SmolLM2 tokenizer: run `make up` (or the e2e tests) once, which converts the demo model")


def bench(root: str, key: str, rate: float, seconds: float, work: Path, tag: str, tok: str) -> dict:
    """`vllm bench serve` at `rate` for `seconds`: its result."""
    name = f"{tag}.json"
    cmd = [PYTHON, "-c", VLLM_WRAPPER, "bench", "serve", "--backend", "openai-chat", "--base-url", root,
           "--endpoint", "/v1/chat/completions", "--model", "standin", "--tokenizer", tok,
           "--dataset-name", "random", "--random-input-len", "64", "--random-output-len", "16", "--ignore-eos",
           "--num-prompts", str(int(rate * seconds)), "--request-rate", f"{rate:g}", "--seed", "1",
           "--percentile-metrics", "ttft,e2el", "--save-result", "--result-dir", str(work), "--result-filename", name]
    env = {**os.environ, "OPENAI_API_KEY": key, "VLLM_TARGET_DEVICE": "cpu"}
    with (work / f"{tag}.log").open("w") as log:
        done = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "".join((work / f"{tag}.log").read_text().splitlines(keepends=True)[-15:])
        sys.exit(f"vllm bench serve failed on {tag}:\n{tail}")
    return json.loads((work / name).read_text())


def start(cmd: list[str], env: dict[str, str], health: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_http(health, timeout=180)
    return proc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="100,20,5", help="request rates (req/s), comma-separated")
    p.add_argument("--seconds", type=float, default=20.0, help="how long each rate runs per side")
    p.add_argument("--litellm-max-rate", type=float, default=20.0)
    p.add_argument("--baseline-src", type=Path, help="also run the gateway of another checkout's src/ (e.g. "
                   "the main branch's) with the same key: a before/after in the same run")
    p.add_argument("--tokenizer", help="a SmolLM2 tokenizer folder for vLLM's client (default: the demo model's)")
    args = p.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    router = ensure_peer("vllm-router", "vllm-router", "vllm-router")
    litellm = ensure_peer("litellm", "litellm[proxy]", "litellm")
    tok = args.tokenizer or tokenizer()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "LLMNEST_HOME": str(work / "home"), "PYTHONPATH": str(REPO / "src")}
        env.pop("LLMNEST_GATEWAY_DB", None)
        try:
            sport = free_port()
            procs.append(start([PYTHON, str(REPO / "benchmarks" / "standin_server.py"), "--port", str(sport),
                                "--model", "standin", "--itl-ms", "10", "--ttft-ms", "10"], env,
                               f"http://127.0.0.1:{sport}/health", work / "standin.log"))
            standin = f"http://127.0.0.1:{sport}"
            (work / "up.json").write_text(json.dumps([{"model": "standin", "base_url": standin + "/v1"}]))
            key = json.loads(cli(env, "keys", "create", "bench", "--rpm", "1000000", "--tpm", "1000000000",
                                 "--max-concurrency", "100000", "--token-budget", "1000000000000",
                                 "--budget-period", "day", "--json").stdout)["key"]
            gport, rport, lport = free_port(), free_port(), free_port()
            ours = start([PYTHON, "-m", "llmnest", "gateway", "serve", "--port", str(gport), "--upstreams",
                          str(work / "up.json")], env, f"http://127.0.0.1:{gport}/health", work / "llmnest.log")
            theirs = start([str(router), "--host", "127.0.0.1", "--port", str(rport), "--worker-urls", standin,
                            "--policy", "round_robin", "--log-level", "warning"], env,
                           f"http://127.0.0.1:{rport}/health", work / "router.log")
            (work / "litellm.yaml").write_text(
                "model_list:\n  - model_name: standin\n    litellm_params:\n      model: openai/standin\n"
                f"      api_base: {standin}/v1\n      api_key: none\ngeneral_settings:\n  master_key: {MASTER}\n")
            lite = start([str(litellm), "--config", str(work / "litellm.yaml"), "--host", "127.0.0.1", "--port",
                          str(lport)], {**env, "LITELLM_LOG": "ERROR"}, f"http://127.0.0.1:{lport}/health/liveliness",
                         work / "litellm.log")
            procs += [ours, theirs, lite]
            sides = {"llmnest (keys, usage, limits)": (f"http://127.0.0.1:{gport}", key, ours.pid)}
            if args.baseline_src:
                bport = free_port()
                base = start([PYTHON, "-m", "llmnest", "gateway", "serve", "--port", str(bport), "--upstreams",
                              str(work / "up.json")], {**env, "PYTHONPATH": str(args.baseline_src)},
                             f"http://127.0.0.1:{bport}/health", work / "baseline.log")
                procs.append(base)
                sides["llmnest baseline (--baseline-src)"] = (f"http://127.0.0.1:{bport}", key, base.pid)
            sides |= {
                     "vllm-router (no keys)": (f"http://127.0.0.1:{rport}", "none", theirs.pid),
                     "LiteLLM proxy (master key)": (f"http://127.0.0.1:{lport}", MASTER, lite.pid)}
            print(f"stand-in at 10 ms a token, 64-token prompts, 16 output tokens; {args.seconds:g} s per side and"
                  f" rate; load average {load():.1f}", flush=True)
            print(f"{'rate':>6}  {'side':<32} {'mean TTFT ms':>12} {'added ms':>9} {'CPU ms/req':>10} {'failed':>6}")
            for rate in rates:
                before = bench(standin, "none", rate, args.seconds, work, f"straight-{rate:g}-a", tok)
                results = {}
                for label, (root, k, pid) in sides.items():
                    if label.startswith("LiteLLM") and rate > args.litellm_max_rate:
                        continue
                    cpu0 = tree_cpu(pid)
                    r = bench(root, k, rate, args.seconds, work, f"{label.split()[0]}-{rate:g}", tok)
                    results[label] = (r, (tree_cpu(pid) - cpu0) / max(1, r["completed"] + r.get("failed", 0)))
                after = bench(standin, "none", rate, args.seconds, work, f"straight-{rate:g}-b", tok)
                straight = (before["mean_ttft_ms"] + after["mean_ttft_ms"]) / 2
                print(f"{rate:6g}  {'straight (mean of before/after)':<32} {straight:12.2f} {'':>9} {'':>10}"
                      f" {before.get('failed', 0) + after.get('failed', 0):6d}")
                for label, (r, cpu) in results.items():
                    print(f"{rate:6g}  {label:<32} {r['mean_ttft_ms']:12.2f} {r['mean_ttft_ms'] - straight:+9.2f}"
                          f" {1000 * cpu:10.2f} {r.get('failed', 0):6d}", flush=True)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
