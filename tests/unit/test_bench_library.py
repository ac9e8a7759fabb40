"""`bench.run` as a library, and the console's worker that calls it: the same request gives the same
stages as the CLI, progress and notes reach the caller, bad requests are refused before anything is
sent. Against the stand-in OpenAI server (benchmarks/standin_server.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmnest import bench
from llmnest.bench.prompt_sources import DATASETS
from llmnest.console.bench_worker import PREFIX
from llmnest.errors import BadInput
from tests.unit.test_bench_workers import standin  # noqa: F401  (a fixture)


class Recorder(bench.Progress):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def note(self, text: str) -> None:
        self.events.append(("note", text))

    def stage_started(self, qps: float, total: int) -> None:
        self.events.append(("started", (qps, total)))

    def stage_done(self, result: bench.StageResult) -> None:
        self.events.append(("done", result.result["completed"]))


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {i}", "output_tokens": 3}) + "\n" for i in range(12)))
    return path


def test_a_request_runs_every_stage_and_reports_to_the_caller(standin: str, prompts: Path, tmp_path: Path) -> None:  # noqa: F811
    progress = Recorder()
    request = bench.BenchRequest(base_url=standin, api_key="sk-t", dataset="jsonl", dataset_path=str(prompts),
                                 qps="20,inf", num_prompts=4, out=tmp_path / "out")
    done = bench.run(request, progress)
    assert [r.result["completed"] for r in done.stages] == [4, 4] and not done.interrupted
    assert ("started", (20.0, 4)) in progress.events and ("done", 4) in progress.events
    notes = [text for kind, text in progress.events if kind == "note"]
    assert notes[0].startswith(f"benchmarking {standin} (8 requests in 2 stage(s)") and "charts under" in notes[-1]
    assert (tmp_path / "out" / "run.json").is_file() and done.config["dataset_name"] == "jsonl"


@pytest.mark.parametrize("fields, text", [
    ({"dataset": "nope"}, "--dataset must be " + ", ".join(DATASETS)),
    ({"endpoint": "embeddings"}, "--endpoint must be chat or completions"),
    ({"workers": 0}, "--workers must be at least 1"),
    ({"qps": "0"}, "QPS must be greater than 0"),
    ({"dataset": "jsonl"}, "--dataset jsonl needs --dataset-path"),
])
def test_bad_requests_are_refused_before_anything_is_sent(fields: dict, text: str) -> None:
    progress = Recorder()
    with pytest.raises(BadInput, match=text.replace("(", r"\(")):
        bench.run(bench.BenchRequest(base_url="http://127.0.0.1:9/v1", num_prompts=1, **fields), progress)
    assert not [kind for kind, _ in progress.events if kind == "started"]


def test_the_console_worker_runs_the_library_and_streams_progress(standin: str, prompts: Path,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    request = {"base_url": standin, "api_key": "sk-t", "dataset": "jsonl", "dataset_path": str(prompts),
               "qps": "50", "num_prompts": 5, "out": str(tmp_path / "run")}
    done = subprocess.run([sys.executable, "-m", "llmnest.console.bench_worker", json.dumps(request)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    progress = [json.loads(line[len(PREFIX):]) for line in done.stderr.splitlines() if line.startswith(PREFIX)]
    assert progress[0]["total"] == 5 and progress[-1]["stage_done"] == 1 and progress[-1]["done"] == 5
    assert any(line.startswith("benchmarking ") for line in done.stderr.splitlines())
    assert json.loads(done.stdout)["stages"][0]["completed"] == 5 and (tmp_path / "run" / "run.json").is_file()


def test_the_console_worker_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    request = {"base_url": "http://127.0.0.1:9/v1", "dataset": "jsonl", "num_prompts": 1}
    done = subprocess.run([sys.executable, "-m", "llmnest.console.bench_worker", json.dumps(request)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == "error: --dataset jsonl needs --dataset-path FILE.jsonl"
