"""The benchmark pages over run directories as `llmnest bench --out` writes them (from recorded traces):
a run's table and charts, two runs compared, and paths that are not runs refused."""

from __future__ import annotations

import math
import re

import pytest
from starlette.testclient import TestClient

from llmnest.bench import report
from llmnest.console import auth
from llmnest.console.app import create_app
from llmnest.console.bench import runs_dir
from tests.unit.test_bench_report import PNG, trace


@pytest.fixture
def client(tmp_path, monkeypatch) -> TestClient:
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    token = auth.load_or_create_token()
    c = TestClient(create_app(token))
    assert c.get(f"/bench?token={token}").status_code == 200
    return c


def test_runs_listed_shown_and_compared(client) -> None:
    from dataclasses import asdict

    from llmnest.bench.charts import run_charts

    stages = [trace(0.5), trace(math.inf)]
    for name, part in (("20260101-000000-a", stages), ("20260101-000100-b", stages[:1])):
        report.write_run(runs_dir() / name, {"deployment": "demo", "model_id": "m"}, part)
        run_charts([s.result for s in part], [[asdict(r) for r in s.records] for s in part], runs_dir() / name / "charts")
    listing = client.get("/bench").text
    assert "20260101-000000-a" in listing and "Compare ticked runs" in listing
    run = client.get("/bench/runs/20260101-000000-a")
    assert run.status_code == 200 and len(re.findall(r"<tr><td class=\"num\">", run.text)) == 2
    charts = re.findall(r'<img src="([^"]+)"', run.text)
    assert len(charts) == 5 and client.get(charts[0]).content.startswith(PNG)
    both = client.get("/bench/compare?run=20260101-000000-a&run=20260101-000100-b")
    assert both.status_code == 200 and both.text.count("20260101-000000-a</td>") == 2
    assert all(client.get(src).content.startswith(PNG) for src in re.findall(r'<img src="([^"]+)"', both.text))
    one = client.get("/bench/compare?run=20260101-000000-a")
    assert one.status_code == 400 and "at least two runs" in one.text


def test_paths_that_are_not_runs_are_refused(client) -> None:
    assert client.get("/bench/runs/..%2F..%2Fetc").status_code == 404
    assert client.get("/bench/runs/nope").status_code == 404
    assert client.get("/bench/runs/nope/charts/x.png").status_code == 404
    (runs_dir() / "r1").mkdir()
    (runs_dir() / "r1" / "run.json").write_text('{"stages": []}')
    assert client.get("/bench/runs/r1/charts/..%2Frun.json").status_code == 404
