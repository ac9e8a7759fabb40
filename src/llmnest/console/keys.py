"""Keys and usage of a gateway (the admin interface `llmnest keys` and `llmnest usage` use): create (the
secret shown once, in the answer to the form), change limits, revoke; usage per key, model, day or hour as a
chart, a table and CSV. This machine's gateway, or (`?deployment=NAME`, the picker) the one in front of a
deployment elsewhere, reached through its target's channel."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..errors import LlmnestError
from ..gateway.admin import GatewayAdmin, LocalAdmin
from .charts import bar_chart, column_chart
from .console_key import NAME as CONSOLE_KEY
from .console_key import users_of_default
from .web import call, field_of, http_status, in_page_words, render

KEY_FIELDS = {"name": ("key name", "name"), "models": ("--models",), "rpm": ("--rpm",), "tpm": ("--tpm",),
              "max_concurrency": ("--max-concurrency",), "token_budget": ("--token-budget",),
              "budget_period": ("--budget-period",), "expires": ("--expires",)}
LIMITS = ("rpm", "tpm", "max_concurrency", "token_budget")
KEY_LABELS = {"--models": "Models", "--rpm": "Requests / minute", "--tpm": "Tokens / minute",
              "--max-concurrency": "Max concurrency", "--token-budget": "Token budget",
              "--budget-period": "Budget period", "--expires": "Expires"}


def _admin(deployment: str | None) -> GatewayAdmin:
    """This machine's gateway, or the one in front of `deployment` (through its target's channel)."""
    from .. import lifecycle

    return lifecycle.gateway_admin(deployment) if deployment else LocalAdmin()


def _deployment(request: Request) -> str | None:
    return request.query_params.get("deployment") or None


def _query(deployment: str | None, **params: str) -> str:
    """The query string that keeps the chosen gateway (and `params`) on the next page."""
    from urllib.parse import urlencode

    pairs = {**({"deployment": deployment} if deployment else {}), **params}
    return f"?{urlencode(pairs)}" if pairs else ""


def remote_gateways() -> list[str]:
    """Deployments whose gateway is not this machine's (the page's picker offers them)."""
    from .. import state

    names = []
    for dep in state.all_deployments():
        try:
            if not _admin(dep.name).local:
                names.append(dep.name)
        except LlmnestError:  # no gateway in front of it
            continue
    return names


def _limit(text: str) -> int | str | None:
    """An integer when the field is one; other text goes to the library, which says what is wrong."""
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isdigit() else text


def _form_limits(form: dict[str, str]) -> dict[str, Any]:
    models = form.get("models", "").strip()
    return {"models": [m.strip() for m in models.split(",")] if models else None,
            **{f: _limit(form.get(f, "")) for f in LIMITS}, "budget_period": form.get("budget_period") or None}


def _form_of(row: dict[str, Any]) -> dict[str, str]:
    """A key's limits (its `keys ls` row) as the form shows them (blank: no limit)."""
    return {"name": row["name"], "models": ",".join(row["models"] or []), "budget_period": row["budget_period"] or "",
            "expires": (row["expires"] or "")[:16], **{f: str(row[f] or "") for f in LIMITS}}


def _update(deployment: str | None, name: str, form: dict[str, str]) -> None:
    """Set what the form fills in; a field left blank removes that limit."""
    limits = _form_limits(form)
    expires = form.get("expires", "").strip() or None
    clear = tuple(f for f in (*LIMITS, "models") if limits[f] is None) + (() if expires else ("expires",))
    _admin(deployment).update_key(name, {k: v for k, v in limits.items() if v is not None}, expires, clear=clear)


def _create(deployment: str | None, form: dict[str, str]) -> str:
    _, secret = _admin(deployment).create_key(form.get("name", "").strip(), _form_limits(form),
                                              form.get("expires", "").strip() or None)
    return secret


def _rows(deployment: str | None) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    admin = _admin(deployment)
    return admin.key_rows(), users_of_default() if admin.local else [], remote_gateways()


async def page(request: Request, *, status: int = 200, **extra: Any) -> Response:
    deployment = _deployment(request)
    try:
        rows, default_users, gateways = await call(_rows, deployment)
    except LlmnestError as exc:
        return render(request, "error.html", http_status(exc), message=exc.message)
    base = {"form": {}, "error": None, "field": None, "secret": None, "created": None}
    return render(request, "keys.html", status, rows=rows, console_key=CONSOLE_KEY if not deployment else None,
                  default_users=default_users, deployment=deployment, gateways=gateways, q=_query(deployment),
                  **{**base, **extra})


async def create(request: Request) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        secret = await call(_create, _deployment(request), form)
    except LlmnestError as exc:
        return await page(request, status=http_status(exc), form=form, error=in_page_words(exc.message, KEY_LABELS),
                          field=field_of(exc.message, KEY_FIELDS) or "name")
    return await page(request, secret=secret, created=form.get("name", "").strip())


async def edit(request: Request) -> Response:
    """GET: the key's limits in a form; POST: change them (the secret stays the same)."""
    name, deployment = request.path_params["name"], _deployment(request)
    q = _query(deployment)
    if request.method == "GET":
        try:
            row = await call(lambda: _admin(deployment).key_row(name))
        except LlmnestError as exc:
            return render(request, "error.html", http_status(exc), message=exc.message)
        return render(request, "key_edit.html", name=name, form=_form_of(row), error=None, field=None, q=q)
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        await call(_update, deployment, name, form)
    except LlmnestError as exc:
        return render(request, "key_edit.html", http_status(exc), name=name, form=form, q=q,
                      error=in_page_words(exc.message, KEY_LABELS), field=field_of(exc.message, KEY_FIELDS))
    return RedirectResponse(f"/keys{q}", status_code=303)


async def revoke(request: Request) -> Response:
    name, deployment = request.path_params["name"], _deployment(request)
    if name == CONSOLE_KEY and not deployment:
        return render(request, "error.html", 409, message=f"{CONSOLE_KEY} is the console's own key (Playground, "
                      "Benchmarks); it is not revoked from here")
    try:
        await call(lambda: _admin(deployment).revoke_key(name))
    except LlmnestError as exc:
        return render(request, "error.html", http_status(exc), message=exc.message)
    return RedirectResponse(f"/keys{_query(deployment)}", status_code=303)


def _label(row: dict[str, Any], by: str) -> str:
    key = row["key_name"] + (" (this console)" if row["key_name"] == CONSOLE_KEY else "")
    return {"key": key, "model": row["model"]}.get(by) or f"{row['period']} {key}"


def periods(rows: list[dict[str, Any]], by: str, since: float, now: float) -> list[tuple[str, dict[str, int]]]:
    """Day or hour rows summed per period, every period from `since` to now, empty ones 0."""
    import datetime as dt

    size = 86400 if by == "day" else 3600
    fmt = "%Y-%m-%d" if by == "day" else "%Y-%m-%dT%H:00Z"
    sums: dict[str, dict[str, int]] = {}
    for r in rows:
        bucket = sums.setdefault(r["period"], {"ok": 0, "errors": 0, "prompt": 0, "completion": 0})
        bucket["ok"] += r["requests"] - r["errors"]
        bucket["errors"] += r["errors"]
        bucket["prompt"] += r["prompt_tokens"]
        bucket["completion"] += r["completion_tokens"]
    start = int(max(since, now - 400 * size) // size) * size  # at most 400 periods
    labels = [dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime(fmt) for t in range(start, int(now) + 1, size)]
    return [(p, sums.get(p, {"ok": 0, "errors": 0, "prompt": 0, "completion": 0})) for p in labels]


def usage_charts(rows: list[dict[str, Any]], by: str, since: float, now: float) -> list[str]:
    """Tokens and requests (ok and errors stacked: errors are part of the requests, not on top of them);
    by day or hour as time series."""
    if not rows:
        return []
    if by in ("day", "hour"):
        series = periods(rows, by, since, now)
        every = max(1, len(series) // 8)
        short = [(p[5:] if by == "day" else p[5:13].replace("T", " ") + "h", v) for p, v in series]
        return [column_chart("Tokens", [(p, {"prompt": v["prompt"], "completion": v["completion"]}) for p, v in short], every),
                column_chart("Requests", [(p, {"ok": v["ok"], "errors": v["errors"]}) for p, v in short], every)]
    tokens = [(_label(r, by), {"prompt": r["prompt_tokens"], "completion": r["completion_tokens"]}) for r in rows]
    requests = [(_label(r, by), {"ok": r["requests"] - r["errors"], "errors": r["errors"]}) for r in rows]
    return [bar_chart("Tokens", tokens), bar_chart("Requests", requests)]


async def usage_page(request: Request) -> Response:
    import time

    from ..gateway import usage

    by = request.query_params.get("by", "day")
    since = request.query_params.get("since", "7d")
    deployment = _deployment(request)
    gateways = await call(remote_gateways)
    try:
        rows = await call(lambda: _admin(deployment).usage(by, since))
        charts = usage_charts(rows, by, usage.parse_since(since), time.time())
        error = None
    except LlmnestError as exc:
        rows, charts, error = [], [], exc.message
    return render(request, "usage.html", rows=rows, by=by, since=since, error=error, charts=charts,
                  console_key=CONSOLE_KEY if not deployment else None, deployment=deployment, gateways=gateways,
                  csv=f"/usage.csv{_query(deployment, by=by, since=since)}")


async def usage_csv(request: Request) -> Response:
    from ..gateway import usage

    by = request.query_params.get("by", "day")
    since = request.query_params.get("since", "7d")
    try:
        rows = await call(lambda: _admin(_deployment(request)).usage(by, since))
    except LlmnestError as exc:
        return Response(exc.message + "\n", status_code=http_status(exc), media_type="text/plain")
    return Response(usage.to_csv(rows), media_type="text/csv",
                    headers={"content-disposition": f'attachment; filename="usage-by-{by}.csv"'})
