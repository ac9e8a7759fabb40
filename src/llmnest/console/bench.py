"""Benchmarks: start `llmnest bench` on a deployment with live progress; each run's results as the
CLI's table and charts; runs compared side by side (the CLI's compare charts)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from .. import lifecycle
from ..bench.report import SWEEP_COLUMNS, load_run
from ..errors import BadInput, LlmnestError, NotFound
from ..home import home
from .bench_worker import PREFIX
from .jobs import Job
from .web import call, field_of, http_status, render

FIELDS = {"qps": ("--qps", "QPS"), "num_prompts": ("--num-prompts",), "input_len": ("--input-len",),
          "output_len": ("--output-len",), "dataset": ("--dataset", "--dataset-path", "dataset"),
          "deployment": ("deployment",)}
DEFAULTS = {"qps": "1,2", "num_prompts": "8", "dataset": "random", "input_len": "128", "output_len": "32"}


def runs_dir() -> Path:
    path = home() / "console" / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_dir(run: str) -> Path:
    path = runs_dir() / run
    if "/" in run or run.startswith(".") or not (path / "run.json").is_file():
        raise NotFound(f"no benchmark run named {run!r}; the benchmarks page lists them")
    return path


def list_runs() -> list[dict[str, Any]]:
    out = []
    for d in sorted(runs_dir().iterdir(), reverse=True):
        if (d / "run.json").is_file():
            cfg = json.loads((d / "run.json").read_text())
            out.append({"run": d.name, "deployment": cfg.get("deployment"), "model": cfg.get("model_id"),
                        "stages": len(cfg.get("stages", [])), "date": cfg.get("date"),
                        "interrupted": cfg.get("interrupted")})
    return out


def _int(form: dict[str, str], key: str, flag: str) -> str:
    text = form.get(key, "").strip()
    if not text.isdigit() or int(text) < 1:
        raise BadInput(f"{flag} must be a whole number of at least 1, not {text!r}")
    return text


def request_for(form: dict[str, str], out: Path) -> dict[str, Any]:
    """The `bench.BenchRequest` fields of the form, as JSON for the worker (checked by the library when it runs)."""
    name = form.get("deployment", "").strip()
    if not name:
        raise BadInput("pick a deployment to benchmark")
    dataset = form.get("dataset") or "random"
    request: dict[str, Any] = {"name": name, "qps": form.get("qps", "").strip() or DEFAULTS["qps"],
                               "num_prompts": int(_int(form, "num_prompts", "--num-prompts")), "dataset": dataset,
                               "out": str(out)}
    if dataset == "random":
        request["input_len"] = int(_int(form, "input_len", "--input-len"))
    if form.get("output_len", "").strip():
        request["output_len"] = int(_int(form, "output_len", "--output-len"))
    if form.get("dataset_path", "").strip():
        request["dataset_path"] = form["dataset_path"].strip()
    return request


def _check(form: dict[str, str]) -> None:
    """What can be refused before anything is sent: the rates and the deployment."""
    from .. import state
    from ..bench.schedule import parse_rates

    parse_rates(form.get("qps", "").strip() or DEFAULTS["qps"])
    dep = state.get(state.resolve_name(form.get("deployment", "").strip()))
    if not lifecycle.endpoints(dep, None):
        raise BadInput(f"{dep.name} has no endpoint yet (status {dep.status})")


def _bench(job: Job, request: dict[str, Any], out: Path) -> None:
    from .. import state
    from .bench_worker import KEY_ENV
    from .console_key import key_for

    key = key_for(state.get(request["name"]))  # the console's own key behind the gateway (in the environment, not argv)
    env = {**os.environ, **({KEY_ENV: key} if key else {})}
    proc = subprocess.Popen([sys.executable, "-m", "llmnest.console.bench_worker", json.dumps(request)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", env=env)
    assert proc.stderr is not None and proc.stdout is not None
    notes: list[str] = []
    for line in proc.stderr:
        if line.startswith(PREFIX):
            with job.lock:
                job.progress = json.loads(line[len(PREFIX):])
        elif line.strip():
            notes.append(line.rstrip())
            job.say(line)
    stdout = proc.stdout.read()
    if proc.wait() != 0 or not (out / "run.json").is_file():
        last = next((n for n in reversed(notes) if n.startswith("error:")), notes[-1] if notes else "")
        raise LlmnestError(last.removeprefix("error: ") or f"the benchmark ended with exit code {proc.returncode}",
                           detail="\n".join(notes[-15:]))
    doc = json.loads(stdout)
    job.result = {"message": f"{len(doc['stages'])} stage(s) measured", "link": f"/bench/runs/{out.name}"}


async def page(request: Request) -> Response:
    form = {**DEFAULTS, "deployment": request.query_params.get("deployment", "")}
    error = field = None
    status = 200
    if request.method == "POST":
        form = {k: str(v) for k, v in (await request.form()).items()}
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = runs_dir() / f"{stamp}-{form.get('deployment', '').strip() or 'x'}"
        try:
            request_fields = request_for(form, out)
            await call(_check, form)
        except LlmnestError as exc:
            error, field, status = exc.message, field_of(exc.message, FIELDS) or "deployment", http_status(exc)
        else:
            job = request.app.state.jobs.start("bench", form["deployment"].strip(), lambda j: _bench(j, request_fields, out))
            return RedirectResponse(f"/jobs/{job.id}", status_code=303)
    rows, runs = await call(lifecycle.rows), await call(list_runs)
    return render(request, "bench.html", status, rows=rows, runs=runs, form=form, error=error, field=field,
                  jobs=[j.view() for j in request.app.state.jobs.recent("bench")])


def table(stages: list[dict[str, Any]], label: str | None = None) -> list[list[str]]:
    return [([label] if label else []) + [cell(r) for _, cell in SWEEP_COLUMNS] for r in stages]


def _charts(path: Path) -> list[str]:
    folder = path / "charts"
    return sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []


async def run_page(request: Request) -> Response:
    run = request.path_params["run"]
    try:
        path = _run_dir(run)
        stages = await call(load_run, path)
    except LlmnestError as exc:
        return render(request, "error.html", http_status(exc), message=exc.message)
    config = json.loads((path / "run.json").read_text())
    return render(request, "bench_run.html", run=run, config=config, header=[n for n, _ in SWEEP_COLUMNS],
                  rows=table(stages), charts=_charts(path), base=f"/bench/runs/{run}/charts")


async def chart(request: Request) -> Response:
    run, name = request.path_params["run"], request.path_params["chart"]
    try:
        path = _run_dir(run) if not run.startswith("compare-") else runs_dir() / run
    except LlmnestError as exc:
        return Response(exc.message, status_code=http_status(exc))
    file = path / "charts" / name
    if "/" in name or not name.endswith(".png") or not file.is_file():
        return Response("no such chart", status_code=404)
    return FileResponse(file, media_type="image/png")


def _compare(runs: list[str]) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    from ..bench.compare import compare_charts, load_runs

    if len(runs) < 2:
        raise BadInput("tick at least two runs to compare")
    loaded = load_runs([_run_dir(r) for r in runs])
    name = "compare-" + hashlib.sha256("\n".join(sorted(runs)).encode()).hexdigest()[:12]
    charts = runs_dir() / name / "charts"
    if not charts.is_dir():
        compare_charts(loaded, charts)
    return name, loaded


async def compare(request: Request) -> Response:
    runs = request.query_params.getlist("run")
    try:
        name, loaded = await call(_compare, runs)
    except LlmnestError as exc:
        return render(request, "error.html", http_status(exc), message=exc.message)
    rows = [row for label, stages in loaded.items() for row in table(stages, label)]
    return render(request, "bench_run.html", run=name, config={"runs": runs}, header=["run", *(n for n, _ in SWEEP_COLUMNS)],
                  rows=rows, charts=_charts(runs_dir() / name), base=f"/bench/runs/{name}/charts")


