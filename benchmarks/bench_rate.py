#!/usr/bin/env python3
"""Does `llmnest bench` keep a high request rate on schedule? Side by side per worker count.

Starts the fast stand-in server (benchmarks/standin_server.py) and runs `llmnest bench` against it
at one rate (default 1,000 requests/s, 16-token outputs) with each --workers value, and prints the
schedule lag (actual minus planned send time), the achieved send rate, the client's CPU and its
health verdict, one column per worker count ("auto" = the automatic choice).

    python benchmarks/bench_rate.py --qps 1000 --num-prompts 5000 --workers 1,2,auto
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_vllm import PYTHON, free_port, start_standin, stop_server  # noqa: E402

ROWS = (("requests sent / planned", lambda s: f"{s['requests_sent']}/{s['requests_planned']}"),
        ("completed", lambda s: str(s["completed"])),
        ("achieved send rate (req/s)", lambda s: f"{s['achieved_request_rate']:.1f}"),
        ("mean schedule lag (ms)", lambda s: f"{s['mean_schedule_lag_ms']:.2f}"),
        ("p99 schedule lag (ms)", lambda s: f"{s['p99_schedule_lag_ms']:.2f}"),
        ("max schedule lag (ms)", lambda s: f"{s['max_schedule_lag_ms']:.2f}"),
        ("client processes", lambda s: str(s["client_processes"])),
        ("busiest client process CPU", lambda s: f"{s['client_busiest_process_cpu']:.0%}"),
        ("p99 loop delay (ms)", lambda s: f"{s['p99_loop_delay_ms']:.2f}"),
        ("client CPU per token (us)", lambda s: f"{s['client_cpu_per_token_us']:.1f}"),
        ("client saturated", lambda s: "yes" if s["client_saturated"] else "no"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qps", type=float, default=1000.0)
    p.add_argument("--num-prompts", type=int, default=5000)
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--workers", default="1,2,auto", help="comma-separated --workers values ('auto': none given)")
    p.add_argument("--itl-ms", type=float, default=0.0, help="the stand-in's pause between tokens")
    p.add_argument("--json", dest="json_path", help="also write the stage results to this file")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rate-"))
    dataset = work / "prompts.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": f"Request {i}: say something about the number {i}."}) + "\n"
                               for i in range(a.num_prompts)))
    port = free_port()
    server = start_standin(port, a.itl_ms, work / "standin.log")
    results = {}
    try:
        for workers in a.workers.split(","):
            cmd = [PYTHON, "-m", "llmnest", "bench", "--base-url", f"http://127.0.0.1:{port}/v1", "--api-key",
                   "sk-standin", "--dataset", "jsonl", "--dataset-path", str(dataset), "--qps", f"{a.qps:g}",
                   "--num-prompts", str(a.num_prompts), "--output-len", str(a.output_len), "--json"]
            if workers != "auto":
                cmd += ["--workers", workers]
            done = subprocess.run(cmd, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"llmnest bench --workers {workers} failed:\n{done.stderr[-2000:]}")
            results[workers] = json.loads(done.stdout)["stages"][0]
            print(f"--workers {workers}: done", flush=True)
    finally:
        stop_server(server)
    print(f"=== {a.qps:g} requests/s, {a.num_prompts} requests of {a.output_len} tokens, stand-in ITL {a.itl_ms:g} ms "
          f"(bar: mean lag < 5 ms)")
    print(f"{'':<30}" + "".join(f"{'workers ' + w:>16}" for w in results))
    for label, cell in ROWS:
        print(f"{label:<30}" + "".join(f"{cell(s):>16}" for s in results.values()))
    if a.json_path:
        Path(a.json_path).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
