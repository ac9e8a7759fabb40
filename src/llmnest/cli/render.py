"""Text the deployment commands print. Pure functions of the data the lifecycle returns."""

from __future__ import annotations

from typing import Any

from ..endpoints import Endpoint
from ..examples import chatbox_settings, curl_example, python_example


def ready_line(summary: dict[str, Any], seconds: float) -> str:
    """'✓ NAME answers (vllm, docker on this machine, 41 s)'."""
    return f"✓ {summary['name']} answers ({summary['engine']}, {summary['where']}, {seconds:.0f} s)"


def extra_text(extra: dict[str, Any]) -> str:
    """What the target added to `up`/`redeploy`'s result (a namespace, a region, how it rolled out), one line
    each under the ready line, then a blank line."""
    width = max((len(k) for k in extra), default=0)
    return "".join(f"  {k.replace('_', ' '):<{width}}  {v}\n" for k, v in extra.items() if v not in (None, ""))


def endpoint_text(summary: dict[str, Any], program: str = "llmnest") -> str:
    """The block a person pastes from: endpoints, key, curl, Python, Chatbox, next commands (run as
    `program`, the way this llmnest is reached from here)."""
    eps = [Endpoint(e["base_url"], e["api_key"], e["model"], e["label"]) for e in summary["endpoints"]]
    out = [f"  {'Endpoint (' + e.label + ')':<22} {e.base_url}" for e in eps]
    label = f"API key ({summary.get('api_key_name') or 'default'})" if summary.get("gateway") else "API key"
    key = summary["api_key"] or ("(none: open endpoint)" if not summary.get("api_key_enabled", True) else
                                 "(not made here: see keys above)")
    out += [f"  {label:<22} {key}" if len(label) <= 22 else f"  {label}\n  {'':<22} {key}",
            f"  {'Model':<22} {summary['served_model_name']}", ""]
    if eps:
        ep = eps[0]
        out += ["curl:", curl_example(ep), "", "Python (pip install openai):", python_example(ep), "",
                "Chatbox (Settings > Model provider > Add custom provider):"]
        out += [f"  {k:<15} {v}" for k, v in chatbox_settings(ep).items()]
    name = summary["name"]
    logs = "-f" if summary["follow_logs"] else "--tail 100"
    out += ["", f"Operate: {program} status {name} | logs {name} {logs} | show {name} --as script | "
                f"redeploy {name} --set KEY=VALUE | bench {name} | down {name}"]
    if summary.get("gateway"):
        out += [f"Team:    {program} keys create NAME (a key per person or app, with limits) | keys ls | usage --by key"]
    out += [f"Console: {program} console (prints a URL to open in a browser: deployments, chat, logs, keys, usage)"]
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
        if key == "replicas":  # one line per replica
            lines.append(f"{key:>{width}}")
            lines += [f"{'':>{width + 2}}  {flat(shown(r))}" for r in value]
        elif key in nested:
            lines.append(f"{key:>{width}}")
            lines += [f"{k:>{width + 2}}  {flat(v)}" for k, v in nested[key].items()]
        else:
            lines.append(f"{key:>{width}}  {flat(value)}")
    return "\n".join(lines)
