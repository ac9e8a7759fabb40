"""Several client processes, one run: the schedule is shared out and the records merged back, so the
metrics are those one process computes on the same records. The end-to-end cases run the real client
and worker processes against the stand-in server of benchmarks/ on loopback (no model needed)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from llmnest.bench import metrics, runner
from llmnest.bench.datasets import Prompt
from llmnest.bench.health import ProcessFigures, assess
from llmnest.bench.record import RequestRecord
from llmnest.bench.request import Client
from llmnest.bench.workers import auto_workers, merge, split_limit
from tests.conftest import REPO, free_port


def records(n: int) -> list[RequestRecord]:
    out = []
    for i in range(n):
        r = RequestRecord(i, 0.05 * i, 8, 4, sent=0.05 * i + 0.001 * (i % 3), ok=i % 7 != 3)
        r.chunks = [0.1 + 0.01 * i, 0.2 + 0.01 * i, 0.35] if r.ok else []
        r.output_tokens = 3 if r.ok else None
        r.error = None if r.ok else "timeout"
        r.ended = r.sent + 0.4
        out.append(r)
    return out


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_merged_slices_give_the_metrics_of_one_process(workers: int) -> None:
    trace = records(23)
    slices = [trace[k::workers] for k in range(workers)]
    merged = merge(slices[::-1])  # whatever order the workers answer in
    assert [r.index for r in merged] == list(range(23))
    one = metrics.summarize(trace, 2.0, goodput_ms={"ttft": 250.0}, planned=23)
    many = metrics.summarize(merged, 2.0, goodput_ms={"ttft": 250.0}, planned=23)
    assert json.dumps(one, sort_keys=True) == json.dumps(many, sort_keys=True)


def test_max_concurrency_is_shared_out() -> None:
    assert split_limit(None, 3) == [None, None, None]
    assert split_limit(10, 3) == [4, 3, 3] and sum(split_limit(7, 2)) == 7


def test_automatic_workers_follow_the_rate_and_the_cpus() -> None:
    assert auto_workers(10.0, [200] * 600, cpus=8) == 1  # 2,000 chunks/s: one process
    assert auto_workers(1000.0, [16] * 5000, cpus=8) == 4  # 1,000 requests/s
    assert auto_workers(100.0, [1000] * 600, cpus=8) == 4  # 100,000 chunks/s
    assert auto_workers(1000.0, [16] * 5000, cpus=2) == 2  # never more than the CPUs
    assert auto_workers(1000.0, [16] * 5000, max_concurrency=3, cpus=8) == 3
    assert auto_workers(math.inf, [16] * 1, cpus=8) == 1


@contextmanager
def standin_server(*args: str) -> Iterator[str]:
    """The stand-in OpenAI server (benchmarks/standin_server.py) on a free port: its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "standin_server.py"), "--port", str(port),
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def standin() -> Iterator[str]:
    with standin_server("--api-key", "sk-t", "--itl-ms", "1") as url:
        yield url


def plan(workers: int, n: int = 40, qps: float = 200.0) -> runner.BenchPlan:
    prompts = [Prompt(f"question number {i}", 3, 4 + i % 5) for i in range(n)]
    return runner.BenchPlan([runner.Stage(qps, prompts)], burstiness=1.0, seed=3, workers=workers)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_stage_over_worker_processes_is_one_run(standin: str, workers: int) -> None:
    [stage] = runner.run(Client(standin, "sk-t", None), plan(workers), None)
    r = stage.result
    assert not stage.interrupted and r["completed"] == 40 and r["failed"] == 0
    assert [x.index for x in stage.records] == list(range(40))
    assert [x.output_tokens for x in stage.records] == [4 + i % 5 for i in range(40)]
    assert all(len(x.chunks) == x.output_tokens for x in stage.records)  # one chunk per token, all counted
    assert all(x.sent >= x.scheduled - 1e-9 for x in stage.records)  # never early: one shared start
    assert all(x.written is not None and x.written >= x.sent for x in stage.records)
    assert r["client_processes"] == workers and len(stage.processes) == workers
    assert r["total_output_tokens"] == sum(4 + i % 5 for i in range(40))
    assert r["client_cpu_s"] > 0 and r["client_cpu_per_token_us"] > 0
    assert r["duration"] == pytest.approx(max(x.ended for x in stage.records))
    again = metrics.summarize(stage.records, r["duration"], planned=40)
    assert {k: again[k] for k in ("mean_ttft_ms", "p99_itl_ms", "mean_tpot_ms", "output_throughput")} == \
        {k: r[k] for k in ("mean_ttft_ms", "p99_itl_ms", "mean_tpot_ms", "output_throughput")}


def test_wrong_key_and_keep_alive(standin: str) -> None:
    import asyncio

    async def go() -> tuple[RequestRecord, RequestRecord, RequestRecord, int]:
        async with Client(standin, "sk-t", "standin") as good, Client(standin, "sk-wrong", "standin") as bad:
            a = await good.send(Prompt("hi", 1, 3), RequestRecord(0, 0.0, 1, 3), 0.0)
            b = await good.send(Prompt("hi", 1, 5), RequestRecord(1, 0.0, 1, 5), 0.0)
            c = await bad.send(Prompt("hi", 1, 3), RequestRecord(2, 0.0, 1, 3), 0.0)
            return a, b, c, good.idle()

    a, b, c, idle = asyncio.run(go())
    assert a.ok and b.ok and (a.output_tokens, b.output_tokens) == (3, 5) and len(b.chunks) == 5
    assert idle == 1  # the second request reused the first one's connection
    assert not c.ok and c.error == "http 401" and "Unauthorized" in (c.detail or "")


def test_a_dead_port_is_a_connection_failure() -> None:
    import asyncio

    async def go() -> RequestRecord:
        async with Client(f"http://127.0.0.1:{free_port()}/v1", None, "m", timeout_s=5) as client:
            return await client.send(Prompt("hi", 1, 3), RequestRecord(0, 0.0, 1, 3), 0.0)

    record = asyncio.run(go())
    assert not record.ok and record.error == "connection" and record.ended >= record.sent


def test_health_warns_when_the_client_was_saturated() -> None:
    calm = ProcessFigures(cpu_s=0.2, wall_s=10.0, loop_delays_s=[0.001] * 100)
    busy = ProcessFigures(cpu_s=9.5, wall_s=10.0, loop_delays_s=[0.001] * 100)
    late = ProcessFigures(cpu_s=1.0, wall_s=10.0, loop_delays_s=[0.001] * 90 + [0.05] * 10)
    base = {"total_output_tokens": 1000, "mean_schedule_lag_ms": 0.5}
    ok = assess([calm, calm], base)
    assert not ok["client_saturated"] and ok["client_warnings"] == []
    assert ok["client_processes"] == 2 and ok["client_cpu_s"] == pytest.approx(0.4)
    assert ok["client_cpu_per_token_us"] == pytest.approx(400.0)
    hot = assess([calm, busy], base)
    assert hot["client_saturated"] and "95% of a CPU core" in hot["client_warnings"][0]
    assert "--workers 3" in hot["client_warnings"][0]
    slow = assess([late], {**base, "mean_itl_ms": 20.0})
    assert slow["client_saturated"] and "event loop ran 50.0 ms late" in slow["client_warnings"][0]
    assert "other processes kept it off the CPU" in slow["client_warnings"][0]  # it was idle: the machine was busy
    assert not assess([late], {**base, "mean_itl_ms": 2000.0})["client_saturated"]  # 50 ms of a 2 s ITL: noise
    behind = assess([calm], {**base, "mean_schedule_lag_ms": 25.0})
    assert behind["client_saturated"] and "behind the schedule" in behind["client_warnings"][0]


def test_the_report_block_shows_the_client_health() -> None:
    from llmnest.bench.report import result_block

    trace = records(10)
    result = {"request_rate": 5.0, "burstiness": 1.0, "max_concurrency": None, "num_prompts": 10,
              **metrics.summarize(trace, 2.0)}
    result |= assess([ProcessFigures(1.9, 2.0, [0.0])], result)
    block = result_block(result)
    assert "Client processes:                        1" in block
    assert "Client:                                  SATURATED" in block


def test_a_stream_faster_than_the_read_interval_loses_no_chunk() -> None:
    """Against the stand-in at full speed reads are gathered (COALESCE_S); every token is still counted,
    the first one is never held back, and the stamps only move forward."""
    import asyncio

    async def go(url: str) -> list[RequestRecord]:
        async with Client(url, None, "standin") as client:
            return await asyncio.gather(*(client.send(Prompt("hi", 1, 800), RequestRecord(i, 0.0, 1, 800), 0.0)
                                          for i in range(3)))

    with standin_server() as url:
        records = asyncio.run(go(url))
    for record in records:
        assert record.ok and record.output_tokens == 800 and len(record.chunks) == 800
        assert record.chunks == sorted(record.chunks) and record.chunks[-1] <= record.ended - record.sent


def test_the_cli_prints_the_client_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    from llmnest.cli.bench_cmd import RichProgress

    progress = RichProgress(show_blocks=False)
    progress.stage_started(10.0, 1)
    warning = "a client process used 97% of a CPU core: use --workers 2"
    progress.stage_done(runner.StageResult(10.0, {"client_warnings": [warning]}, []))
    assert warning in capsys.readouterr().err


def bench(url: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    """`llmnest bench --json --out OUT` against the stand-in, as a child process."""
    dataset = out.parent / "prompts.jsonl"
    if not dataset.exists():
        dataset.write_text("".join(json.dumps({"prompt": f"question number {i}"}) + "\n" for i in range(400)))
    return subprocess.Popen(
        [sys.executable, "-m", "llmnest", "bench", "--base-url", url, "--api-key", "sk-t", "--dataset", "jsonl",
         "--dataset-path", str(dataset), "--seed", "5", "--json", "--out", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_records(path: Path) -> list[RequestRecord]:
    return [RequestRecord(**json.loads(line)) for line in path.read_text().splitlines()]


def test_one_worker_and_three_write_the_same_run(standin: str, tmp_path: Path) -> None:
    """The run directory of a stage over three processes is that of one process: the same schedule, one
    records file in schedule order, a summary that is exactly the metrics of those records, the same charts."""
    runs = {}
    for workers in ("1", "3"):
        out = tmp_path / f"w{workers}"
        stdout, stderr = bench(standin, out, "--qps", "100", "--num-prompts", "60", "--output-len", "6",
                               "--workers", workers).communicate(timeout=300)
        stage = json.loads(stdout)["stages"][0]
        assert stage["client_processes"] == int(workers) and stage["completed"] == 60, stderr
        summary = json.loads((out / "stage-qps100.json").read_text())
        records = read_records(out / "stage-qps100.records.jsonl")
        assert [r.index for r in records] == list(range(60))
        again = metrics.summarize(records, summary["duration"], planned=60)
        assert {k: summary[k] for k in again} == json.loads(json.dumps(again)), f"--workers {workers}"
        runs[workers] = records, sorted(p.name for p in (out / "charts").iterdir())
    (one, charts_one), (three, charts_three) = runs["1"], runs["3"]
    assert [r.scheduled for r in one] == [r.scheduled for r in three]  # one schedule, whoever sends it
    assert [(r.prompt_len, r.max_tokens, r.output_tokens) for r in one] == \
        [(r.prompt_len, r.max_tokens, r.output_tokens) for r in three]
    assert charts_one == charts_three and charts_one


def worker_processes(pid: int) -> list[int]:
    """The multiprocessing workers whose parent is `pid` (from /proc; not its resource tracker)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == pid and b"spawn_main" in command:
            out.append(int(stat.parent.name))
    return out


def streams(port: int) -> int:
    """Open TCP connections the server on `port` accepted (from /proc/net/tcp): requests under way."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "01")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ctrl_c_with_worker_processes_gives_a_partial_run(tmp_path: Path) -> None:
    """Ctrl-C while two worker processes send: both stop sending, what was in flight is cancelled and
    counted as interrupted, the partial records and summary are written as one run, the exit code is
    130, and no worker process is left behind."""
    with standin_server("--api-key", "sk-t", "--itl-ms", "50") as url:  # 40 tokens: 2 s per request
        out = tmp_path / "run"
        proc = bench(url, out, "--qps", "10", "--num-prompts", "300", "--output-len", "40", "--workers", "2")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        deadline = time.monotonic() + 180
        while (streams(port) < 6 or len(worker_processes(proc.pid)) < 2) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        workers = worker_processes(proc.pid)
        assert len(workers) >= 2 and streams(port) >= 6, "the stage did not get under way"
        time.sleep(3)  # some requests done, others in flight
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    stage = json.loads(stdout)["stages"][0]
    assert stage["interrupted"] is True and stage["client_processes"] == 2
    assert 0 < stage["requests_sent"] < 300 and stage["requests_planned"] == 300
    assert stage["completed"] >= 1 and stage["failures"].get("interrupted", 0) >= 1
    assert stage["completed"] + stage["failed"] == stage["requests_sent"]
    records = read_records(out / "stage-qps10.records.jsonl")
    assert len(records) == stage["requests_sent"]
    assert [r.index for r in records] == sorted({r.index for r in records})  # merged, in schedule order
    assert {r.error for r in records if not r.ok} == {"interrupted"}
    assert json.loads((out / "run.json").read_text())["interrupted"] is True
    assert not [pid for pid in workers if alive(pid)]
