"""Text and dicts the deployment commands print. Pure functions of stored deployments."""

from __future__ import annotations

import time
from typing import Any

import yaml

from .. import state
from ..endpoints import local_endpoints
from ..errors import BadInput
from ..examples import Endpoint, as_dict, chatbox_settings, curl_example, python_example
from ..home import log_path
from ..runtimes import docker, process
from ..shell import render as render_shell

SHOW_FORMATS = ("spec", "command", "script", "ros")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def endpoints_of(dep: state.Deployment, key: str | None) -> list[Endpoint]:
    if dep.spec.target == "aliyun":
        return [Endpoint(e["base_url"], key, dep.spec.served_model_name, e["label"])
                for e in dep.info.get("endpoints", [])]
    return local_endpoints(dep.spec, key)


def _log_file(dep: state.Deployment) -> str | None:
    """The engine's log on this machine; a cloud engine's log is read with `llmnest logs`."""
    return str(log_path(dep.name)) if dep.spec.target == "local" else None


def deployment_summary(dep: state.Deployment, key: str | None) -> dict[str, Any]:
    """What `up --json` prints: name, base_url, api_key, model, served name, engine, status, examples."""
    eps = endpoints_of(dep, key)
    return {
        "name": dep.name,
        "base_url": eps[0].base_url if eps else None,
        "api_key": key,
        "model": dep.spec.model,
        "served_model_name": dep.spec.served_model_name,
        "engine": dep.spec.engine,
        "runtime": dep.spec.runtime,
        "target": dep.spec.target,
        "status": dep.status,
        "endpoints": [as_dict(e) for e in eps],
        "log": _log_file(dep),
    }


def endpoint_text(summary: dict[str, Any]) -> str:
    """The block a person pastes from: endpoints, key, curl, Python, Chatbox, next commands."""
    eps = [Endpoint(e["base_url"], e["api_key"], e["model"], e["label"]) for e in summary["endpoints"]]
    out = [f"  {'Endpoint (' + e.label + ')':<22} {e.base_url}" for e in eps]
    out += [f"  {'API key':<22} {summary['api_key'] or '(none: open endpoint)'}",
            f"  {'Model':<22} {summary['served_model_name']}", ""]
    if eps:
        ep = eps[0]
        out += ["curl:", curl_example(ep), "", "Python (pip install openai):", python_example(ep), "",
                "Chatbox (Settings > Model provider > Add custom provider):"]
        out += [f"  {k:<15} {v}" for k, v in chatbox_settings(ep).items()]
    name = summary["name"]
    logs, show_as = ("--tail 100", "script") if summary.get("target") == "aliyun" else ("-f", "command")
    out += ["", f"Operate: llmnest status {name} | logs {name} {logs} | show {name} --as {show_as} | "
                f"redeploy {name} --set KEY=VALUE | bench {name} | down {name}"]
    return "\n".join(out)


def status_text(info: dict[str, Any]) -> str:
    """`status` for a person: one line per set field; a nested object (the cloud's view) indented below."""
    def flat(value: Any) -> str:
        if isinstance(value, list):  # endpoints: "public http://..., private http://..."
            return ", ".join(" ".join(map(str, v.values())) if isinstance(v, dict) else str(v) for v in value)
        if isinstance(value, dict):  # the probe: "ok=False stage=down detail=ConnectError"
            return " ".join(f"{k}={v}" for k, v in value.items() if v not in (None, ""))
        return str(value)

    def shown(fields: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in fields.items() if v not in (None, "", {}, [])}

    top = shown(info)
    nested = {k: shown({f: v for f, v in value.items() if f != "name"}) for k, value in top.items()
              if isinstance(value, dict)}
    width = max(len(k) for k in [*top, *(f for fields in nested.values() for f in fields)])
    lines = []
    for key, value in top.items():
        if key in nested:
            lines.append(f"{key:>{width}}")
            lines += [f"{k:>{width + 2}}  {flat(v)}" for k, v in nested[key].items()]
        else:
            lines.append(f"{key:>{width}}  {flat(value)}")
    return "\n".join(lines)


def _uptime(dep: state.Deployment) -> float | None:
    return round(time.time() - dep.ready_at, 1) if dep.status == "ready" and dep.ready_at else None


def live_status(dep: state.Deployment) -> str:
    """The stored status, corrected when the supervisor of an active deployment is gone."""
    if dep.spec.runtime == "process" and dep.status in state.ACTIVE and not process.pid_alive(dep.supervisor_pid):
        return "dead"
    return dep.status


def status_row(dep: state.Deployment) -> dict[str, Any]:
    eps = endpoints_of(dep, None)
    return {
        "name": dep.name,
        "model": dep.spec.served_model_name,
        "engine": dep.spec.engine,
        "where": dep.spec.target if dep.spec.target != "local" else dep.spec.runtime,
        "status": live_status(dep),
        "base_url": eps[0].base_url if eps else "-",
        "uptime_s": _uptime(dep),
        "restarts": dep.restarts,
    }


def status_detail(dep: state.Deployment) -> dict[str, Any]:
    """What `status` prints: state, pids or container, endpoint, uptime, restarts, last error, KV cache."""
    row = status_row(dep)
    return {
        **row,
        "runtime": dep.spec.runtime,
        "pid": dep.pid if dep.spec.runtime == "process" else None,
        "supervisor_pid": dep.supervisor_pid if dep.spec.runtime == "process" else None,
        "container": dep.name if dep.spec.runtime == "docker" else None,
        "created_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(dep.created_at)),
        "last_error": dep.last_error,
        "max_model_len": dep.spec.max_model_len,
        **kv_cache_comparison(dep.info.get("kv_cache_tokens_planned"), dep.info.get("kv_cache_tokens_actual")),
        "log": _log_file(dep),
    }


def kv_cache_comparison(planned: int | None, actual: int | None) -> dict[str, Any]:
    """Planned against the KV cache size the engine logged, with the planner's error in percent."""
    error = round(100 * (planned - actual) / actual, 2) if planned and actual else None
    return {"kv_cache_tokens_planned": planned, "kv_cache_tokens_actual": actual, "kv_cache_plan_error_pct": error}


def show(dep: state.Deployment, fmt: str) -> str:
    """`show --as FMT`: the effective spec (YAML), the exact command, a runnable script, or the ROS template."""
    if fmt not in SHOW_FORMATS:
        raise BadInput(f"unknown --as {fmt!r}: use one of {', '.join(SHOW_FORMATS)}")
    key = state.api_key(dep.name)
    if fmt == "spec":
        data = dep.spec.model_dump(mode="json")
        data["api_key"] = f"set (in {state.key_path(dep.name)})" if key else None
        return yaml.safe_dump(data, sort_keys=False).rstrip()
    if dep.spec.target == "aliyun":
        from ..cloud.aliyun import service

        if fmt == "ros":
            return yaml.safe_dump(service.render_template(dep.spec), sort_keys=False).rstrip()
        return service.render_bootstrap(dep.spec)
    if fmt == "ros":
        raise BadInput(f"{dep.name} runs on this machine: a ROS template exists for --target aliyun deployments")
    command = _command(dep, key)
    if fmt == "command":
        return command
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# llmnest deployment {dep.name}: {dep.spec.served_model_name} on {dep.spec.engine} ({dep.spec.runtime})",
        "set -euo pipefail",
        command if dep.spec.runtime == "docker" else f"exec {command}",
    ])


def dry_run_text(result: dict[str, Any]) -> str:
    """`up --target aliyun --dry-run` for a person: the template (YAML, as the ROS console shows it),
    the parameters (secrets masked) and each preflight check."""
    marks = {True: "ok  ", False: "FAIL", None: "skip"}
    checks = [f"  [{marks[c['ok']]}] {c['check']:<12} {c['detail']}" for c in result["preflight"]]
    params = [f"  {k} = {v}" for k, v in result["parameters"].items()]
    return "\n".join([
        "# ROS template", yaml.safe_dump(result["template"], sort_keys=False).rstrip(), "",
        "# Parameters", *params, "",
        "# Preflight", *checks, "",
        "Nothing was created. Add --json for all of this and the bootstrap script as one JSON object.",
    ])


def _command(dep: state.Deployment, key: str | None) -> str:
    if dep.spec.runtime == "process":
        return process.render_command(dep.spec, key)
    argv, env = docker.run_argv(dep.spec, dep.spec.model_path or "", key)
    return render_shell(argv, env, process.key_secrets(dep.name, key))
