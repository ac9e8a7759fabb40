#!/usr/bin/env python3
"""Does `llmnest bench` keep a high request rate on schedule? Side by side per worker count.

Starts the fast stand-in server (benchmarks/standin_server.py, in a session of its own) and runs
`llmnest bench` against it at one rate (default 1,000 requests/s, 16-token outputs) with each
--workers value, `--repeat` times with the order of the worker counts alternating, and prints per run
the schedule lag (when each request's bytes went out minus its planned time), the achieved send rate,
the client's CPU and health verdict, the stand-in's own CPU, and the machine's load average ("auto" =
the automatic worker count).

    python benchmarks/bench_rate.py --qps 1000 --num-prompts 5000 --workers 1,2,auto --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_vllm import PYTHON, free_port, start_standin, stop_server  # noqa: E402

ROWS = (("load average before / after", lambda s: f"{s['load_before']:.1f} / {s['load_after']:.1f}"),
        ("requests sent / planned", lambda s: f"{s['requests_sent']}/{s['requests_planned']}"),
        ("completed", lambda s: str(s["completed"])),
        ("achieved send rate (req/s)", lambda s: f"{s['achieved_request_rate']:.1f}"),
        ("mean schedule lag (ms)", lambda s: f"{s['mean_schedule_lag_ms']:.2f}"),
        ("p99 schedule lag (ms)", lambda s: f"{s['p99_schedule_lag_ms']:.2f}"),
        ("max schedule lag (ms)", lambda s: f"{s['max_schedule_lag_ms']:.2f}"),
        ("client processes", lambda s: str(s["client_processes"])),
        ("busiest client process CPU", lambda s: f"{s['client_busiest_process_cpu']:.0%}"),
        ("p99 loop delay (ms)", lambda s: f"{s['p99_loop_delay_ms']:.2f}"),
        ("client CPU per request (ms)", lambda s: f"{s['client_cpu_s'] / s['requests_sent'] * 1000:.3f}"),
        ("stand-in CPU per request (ms)", lambda s: f"{s['standin_cpu_s'] / s['requests_sent'] * 1000:.3f}"),
        ("client saturated", lambda s: "yes" if s["client_saturated"] else "no"))


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qps", type=float, default=1000.0)
    p.add_argument("--num-prompts", type=int, default=5000)
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--workers", default="1,2,auto", help="comma-separated --workers values ('auto': none given)")
    p.add_argument("--repeat", type=int, default=1, help="runs per worker count (the order alternates)")
    p.add_argument("--itl-ms", type=float, default=0.0, help="the stand-in's pause between tokens")
    p.add_argument("--json", dest="json_path", help="also write the stage results to this file")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rate-"))
    dataset = work / "prompts.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": f"Request {i}: say something about the number {i}."}) + "\n"
                               for i in range(a.num_prompts)))
    port = free_port()
    server = start_standin(port, a.itl_ms, work / "standin.log")
    counts = a.workers.split(",")
    results: dict[str, list[dict]] = {w: [] for w in counts}
    try:
        for rep in range(a.repeat):
            for workers in counts if rep % 2 == 0 else counts[::-1]:
                cmd = [PYTHON, "-m", "llmnest", "bench", "--base-url", f"http://127.0.0.1:{port}/v1", "--api-key",
                       "sk-standin", "--dataset", "jsonl", "--dataset-path", str(dataset), "--qps", f"{a.qps:g}",
                       "--num-prompts", str(a.num_prompts), "--output-len", str(a.output_len), "--json"]
                if workers != "auto":
                    cmd += ["--workers", workers]
                load, cpu = os.getloadavg()[0], process_cpu(server.pid)
                done = subprocess.run(cmd, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True,
                                      check=False)
                if done.returncode != 0:
                    sys.exit(f"llmnest bench --workers {workers} failed:\n{done.stderr[-2000:]}")
                stage = json.loads(done.stdout)["stages"][0]
                results[workers].append({**stage, "load_before": load, "load_after": os.getloadavg()[0],
                                         "standin_cpu_s": process_cpu(server.pid) - cpu})
                print(f"--workers {workers} run {rep + 1}: mean lag {stage['mean_schedule_lag_ms']:.2f} ms "
                      f"(load average {load:.1f})", flush=True)
    finally:
        stop_server(server)
    print(f"=== {a.qps:g} requests/s, {a.num_prompts} requests of {a.output_len} tokens, stand-in ITL {a.itl_ms:g} ms "
          f"(bar: mean lag < 5 ms)")
    columns = [(f"w{w} #{i + 1}", s) for w in counts for i, s in enumerate(results[w])]
    print(f"{'':<32}" + "".join(f"{name:>14}" for name, _ in columns))
    for label, cell in ROWS:
        print(f"{label:<32}" + "".join(f"{cell(s):>14}" for _, s in columns))
    print("median mean lag (ms): " + ", ".join(
        f"--workers {w}: {statistics.median(s['mean_schedule_lag_ms'] for s in results[w]):.2f}" for w in counts))
    if a.json_path:
        Path(a.json_path).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
