"""Time to first answer: `llmnest up` against starting the same vLLM command by hand.

Both runs use the same flags (the hand-run command is the one `llmnest show --as command` prints),
the same warm weights and the same readiness test (a one-token chat completion), alternating
between the two for --rounds rounds. Prints each time and the ratio llmnest / by hand.

    .venv/bin/python benchmarks/up_vs_manual.py [--rounds 2] [--port 18180]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import httpx


def llmnest(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmnest", *args], env=env, capture_output=True, text=True)


def answered(url: str, model: str, key: str) -> bool:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    try:
        return httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def time_llmnest(env: dict[str, str], port: int) -> tuple[float, dict]:
    t0 = time.monotonic()
    done = llmnest(env, "up", "--name", "bench-up", "--port", str(port), "--json")
    elapsed = time.monotonic() - t0
    if done.returncode != 0:
        sys.exit(f"llmnest up failed: {done.stderr}")
    return elapsed, json.loads(done.stdout)


def time_by_hand(command: str, url: str, model: str, key: str) -> float:
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while not answered(url, model, key):
            if proc.poll() is not None:
                sys.exit("the hand-run command exited")
            time.sleep(0.5)
        return time.monotonic() - t0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=18180)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="llmnest-bench-")
    env = {**os.environ, "LLMNEST_HOME": home}
    warm, _ = time_llmnest(env, args.port)  # converts the demo weights if needed; not counted
    command = llmnest(env, "show", "bench-up", "--as", "command").stdout
    llmnest(env, "down", "bench-up")
    print(f"warm-up llmnest up (may include weight conversion): {warm:.1f} s")
    ours, theirs = [], []
    for i in range(args.rounds):
        seconds, info = time_llmnest(env, args.port)
        ours.append(seconds)
        llmnest(env, "down", "bench-up")
        url = f"{info['base_url']}/chat/completions"
        theirs.append(time_by_hand(re.sub(r"--port \d+", f"--port {args.port}", command), url,
                                   info["served_model_name"], info["api_key"]))
        print(f"round {i + 1}: llmnest up {ours[-1]:.1f} s, by hand {theirs[-1]:.1f} s")
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"median time to first answer: llmnest up {a:.1f} s, same vLLM command by hand {b:.1f} s, "
          f"ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
