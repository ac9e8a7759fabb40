"""Deployments: the list with live status, one deployment's status, endpoints, examples and spec, its
actions (restart, redeploy, down; each confirmed in the page, run as a job) and its live log."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from .. import lifecycle, state, targets
from ..errors import BadInput, LlmnestError
from ..examples import as_dict
from ..spec import DeploymentSpec, apply_sets, parse_sets
from ..targets import Capability, Context
from .jobs import Job, Jobs
from .web import call, field_of, http_status, render

KEY_PLACEHOLDER = "YOUR_API_KEY"
# Spec fields the redeploy form shows with their current values, by device (others go in as KEY=VALUE lines).
REDEPLOY_FIELDS = {"cpu": ("max_model_len", "cpu_kv_cache_gib", "enforce_eager", "reasoning_parser"),
                   "cuda": ("max_model_len", "gpu_memory_utilization", "tensor_parallel_size", "enforce_eager",
                            "reasoning_parser")}
LOG_TAIL = 300


def examples(dep: state.Deployment) -> list[dict[str, Any]]:
    """The endpoints' ready-to-paste examples with a placeholder: a key is shown only once, at creation."""
    eps = lifecycle.endpoints(dep, None)
    if dep.spec.api_key_enabled:
        eps = [replace(e, api_key=KEY_PLACEHOLDER) for e in eps]
    return [as_dict(e) for e in eps]


async def index(request: Request) -> Response:
    rows = await call(lifecycle.rows)
    return render(request, "deployments.html", rows=rows, jobs=request.app.state.jobs.recent())


async def rows_json(request: Request) -> Response:
    return JSONResponse(await call(lifecycle.rows))


def _detail(name: str) -> dict[str, Any]:
    info = lifecycle.status(name)
    dep = state.get(info["name"])
    spec_text = lifecycle.show(dep.name, "spec")
    try:
        command = lifecycle.show(dep.name, "command")
    except (LlmnestError, ValueError) as exc:  # a record the target cannot render (yet) stays inspectable
        command = f"(not available: {exc})"
    target = targets.get(dep.spec.target)
    return {"info": info, "dep": dep, "examples": examples(dep), "fields": _detail_fields(dep), "spec_text": spec_text,
            "command": command, "sets": more_lines(dep.spec), "replicas": _replica_rows(info),
            "key_file": str(state.key_path(dep.name)) if dep.spec.api_key_enabled else None,
            "follow": target.refusal(Capability.FOLLOW_LOGS) is None, "down_note": target.declaration.down,
            "paid": target.declaration.paid}


async def detail(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        data = await call(_detail, name)
    except LlmnestError as exc:
        return render(request, "error.html", http_status(exc), message=exc.message)
    job = request.app.state.jobs.running_for(name)
    return render(request, "deployment.html", **data, job=job.view() if job else None, error=None, field=None,
                  posted={})


def _start(jobs: Jobs, kind: str, name: str, work: Any) -> Job:
    if running := jobs.running_for(name):
        raise BadInput(f"{name} is busy with {running.kind}; wait for it to end (see its job page)")
    return jobs.start(kind, name, work)


async def action(request: Request) -> Response:
    """POST restart / redeploy / down: checked now (one line next to the field), then run as a job."""
    name, verb = request.path_params["name"], request.path_params["verb"]
    form = await request.form()
    jobs: Jobs = request.app.state.jobs
    try:
        dep = await call(state.get, name)
        if verb == "restart":
            job = _start(jobs, verb, dep.name, lambda j: lifecycle.restart(dep.name, Context(on_phase=j.on_phase)))
        elif verb == "redeploy":
            sets = {**changed_fields(dep, form), **more_changes(dep.spec, str(form.get("sets", "")))}
            if not sets:
                raise BadInput("nothing to change: give KEY=VALUE lines (for example max_model_len=2048)")
            apply_sets(dep.spec, sets)  # bad values refused now, in the page, before the job starts
            job = _start(jobs, verb, dep.name, lambda j: _redeploy(j, dep.name, sets, bool(form.get("force"))))
        elif verb == "down":
            yes = bool(form.get("yes"))
            job = _start(jobs, verb, dep.name, lambda j: _down(j, dep.name, yes))
        else:
            return Response("unknown action", status_code=404)
    except LlmnestError as exc:
        data = await call(_detail, name) if verb != "down" or name in state.names() else {}
        if not data:
            return render(request, "error.html", http_status(exc), message=exc.message)
        data["sets"] = str(form.get("sets", ""))
        return render(request, "deployment.html", http_status(exc), **data, job=None, error=exc.message,
                      field=field_of(exc.message, {"sets": ("--set", "set")}) or "sets",
                      posted={k: str(v) for k, v in form.items()})
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def changed_fields(dep: state.Deployment, form: Any) -> dict[str, str]:
    """The redeploy form's spec fields whose value differs from the deployment's, as `--set` pairs."""
    current = _detail_fields(dep)
    return {f: str(form.get(f"field.{f}", "")).strip() for f in current
            if f"field.{f}" in form and str(form.get(f"field.{f}", "")).strip() != current[f]}


def _detail_fields(dep: state.Deployment) -> dict[str, str]:
    current = dep.spec.model_dump(mode="json")
    return {f: "" if current.get(f) is None else str(current[f]).lower() if isinstance(current[f], bool)
            else str(current[f]) for f in REDEPLOY_FIELDS.get(dep.spec.device, REDEPLOY_FIELDS["cuda"]) if f in current}


def more_lines(spec: DeploymentSpec) -> str:
    """The engine flags and environment variables in effect, as the "More" box shows them."""
    return "\n".join([*(f"{k}={v}" for k, v in spec.engine_args.items()),
                      *(f"env.{k}={v}" for k, v in spec.env.items())])


def more_changes(spec: DeploymentSpec, text: str) -> dict[str, str]:
    """The "More" box against the spec: new or changed lines, and `KEY=` for a flag or variable whose line
    was deleted (so deleting a line removes that flag). A spec field named there is set as given."""
    given = parse_sets([line.strip() for line in text.splitlines() if line.strip()])
    had = dict(parse_sets(more_lines(spec).splitlines())) if more_lines(spec) else {}
    changes = {k: v for k, v in given.items() if had.get(k) != v}
    return {**{k: "" for k in had if k not in given}, **changes}


def _replica_rows(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The replicas as table rows (status, port, pid or container, restarts, last error)."""
    rows = []
    for r in info.get("replicas") or []:
        container = r.get("container") or {}
        rows.append({"replica": r.get("replica"), "status": r.get("status"), "port": r.get("port"),
                     "process": container.get("name") or (f"pid {r['pid']}" if r.get("pid") else "–"),
                     "restarts": r.get("restarts", 0), "last_error": r.get("last_error") or ""})
    return rows


def _redeploy(job: Job, name: str, sets: dict[str, str], force: bool) -> None:
    created = lifecycle.redeploy(name, sets, Context(on_phase=job.on_phase, force=force, say=job.say))
    how = f" ({created.extra['replaced']})" if created.extra.get("replaced") else ""
    job.result = {"message": f"{name} redeployed with {', '.join(f'{k}={v}' for k, v in sets.items())}{how}",
                  "link": f"/deployments/{name}"}


def _down(job: Job, name: str, yes: bool) -> None:
    job.result = {"message": lifecycle.down(name, Context(on_phase=job.on_phase, yes=yes, say=job.say)),
                  "link": "/"}


async def logs_page(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        dep = await call(state.get, name)
    except LlmnestError as exc:
        return render(request, "error.html", http_status(exc), message=exc.message)
    follow = targets.get(dep.spec.target).refusal(Capability.FOLLOW_LOGS) is None
    sources = [(f"replica {u.index}", f"replica={u.index}") for u in dep.replicas] if len(dep.replicas) > 1 else [
        ("engine", "replica=0")]
    if dep.spec.gateway:
        sources.append(("gateway", "source=gateway"))
    chosen = "source=gateway" if request.query_params.get("source") == "gateway" and dep.spec.gateway else \
        f"replica={_replica(request)}"
    return render(request, "logs.html", name=dep.name, follow=follow, sources=sources, chosen=chosen)


def _replica(request: Request) -> int:
    text = request.query_params.get("replica", "0")
    return int(text) if text.isdigit() else 0


async def metrics_json(request: Request) -> Response:
    """The deployment's live figures (see live.py), polled by its page."""
    from .live import live

    try:
        return JSONResponse(await call(live, request.path_params["name"]))
    except LlmnestError as exc:
        return JSONResponse({"error": exc.message}, status_code=http_status(exc))


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def logs_stream(request: Request) -> Response:
    """Server-sent events: `reset`, then the last lines, then new ones as the engine writes them (where the
    target can follow). A reconnecting EventSource gets `reset` and the tail again, so the view resumes."""
    name = request.path_params["name"]
    try:
        dep = await call(state.get, name)
    except LlmnestError as exc:
        return Response(_sse("failure", exc.message), media_type="text/event-stream")
    follow = targets.get(dep.spec.target).refusal(Capability.FOLLOW_LOGS) is None
    replica, gateway = _replica(request), request.query_params.get("source") == "gateway"
    lines: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=10000)
    stop = threading.Event()

    def read() -> None:
        try:
            for line in lifecycle.logs(name, LOG_TAIL, follow, replica, gateway):
                if stop.is_set():
                    return
                lines.put(("line", line))
            lines.put(("end", "the log ends here" if not follow else "the log was closed"))
        except LlmnestError as exc:
            lines.put(("failure", exc.message))
        except OSError as exc:  # no log yet (never started), or unreadable
            lines.put(("failure", f"cannot read the log: {exc.strerror}: {exc.filename}"))

    threading.Thread(target=read, daemon=True, name=f"console-logs-{name}").start()

    async def events() -> AsyncIterator[str]:
        yield "retry: 2000\n" + _sse("reset", {"follow": follow})
        try:
            while not await request.is_disconnected():
                batch = []
                while not lines.empty() and len(batch) < 500:
                    batch.append(lines.get_nowait())
                if not batch:
                    await asyncio.sleep(0.3)
                    yield ": keep-alive\n\n"
                    continue
                text = [v for k, v in batch if k == "line"]
                if text:
                    yield _sse("lines", text)
                for kind, value in batch:
                    if kind != "line":
                        yield _sse(kind, value)
        finally:
            stop.set()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def job_page(request: Request) -> Response:
    job = request.app.state.jobs.get(request.path_params["job_id"])
    if job is None:
        return render(request, "error.html", 404, message="no such job; jobs live as long as the console process")
    secret = job.take_secret() if job.state == "done" else None
    view = job.view()
    exists = bool(view.get("deployment")) and view["deployment"] in await call(state.names)
    return render(request, "job.html", job=view, secret=secret, exists=exists)


async def job_json(request: Request) -> Response:
    job = request.app.state.jobs.get(request.path_params["job_id"])
    if job is None:
        return JSONResponse({"error": "no such job"}, status_code=404)
    return JSONResponse(job.view())
