"""Keys and usage of the gateway (its database layer, as `llmnest keys` and `llmnest usage` use it):
create (the secret shown once, in the answer to the form), change limits, revoke; usage per key, model,
day or hour as a chart, a table and CSV."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..errors import LlmnestError
from ..gateway.admin import key_rows
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


def _database() -> Any:
    from ..gateway.db import Database

    return Database(None)


def _limit(text: str) -> int | str | None:
    """An integer when the field is one; other text goes to the library, which says what is wrong."""
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isdigit() else text


def _form_args(form: dict[str, str]) -> dict[str, Any]:
    from ..gateway import keys

    models = form.get("models", "").strip()
    return {
        "models": [m.strip() for m in models.split(",")] if models else None,
        **{f: _limit(form.get(f, "")) for f in LIMITS},
        "budget_period": form.get("budget_period") or None,
        "expires_at": keys.parse_expiry(form.get("expires", "").strip() or None),
    }


def _form_of(key: Any) -> dict[str, str]:
    """A stored key's limits as the form shows them (blank: no limit)."""
    import datetime as dt

    expires = dt.datetime.fromtimestamp(key.expires_at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M") if key.expires_at else ""
    return {"name": key.name, "models": ",".join(key.models or []), "budget_period": key.budget_period or "",
            "expires": expires, **{f: str(getattr(key, f) or "") for f in LIMITS}}


def _update(name: str, form: dict[str, str]) -> None:
    """Set what the form fills in; a field left blank removes that limit."""
    from ..gateway import keys

    db = _database()
    args = _form_args(form)
    clear = tuple(f for f in (*LIMITS, "models", "expires_at") if args[f] is None)
    keys.update(db, name, clear=clear, **{k: v for k, v in args.items() if v is not None})


def _create(form: dict[str, str]) -> str:
    from ..gateway import keys

    _, secret = keys.create(_database(), form.get("name", "").strip(), **_form_args(form))
    return secret


def _rows() -> tuple[list[dict[str, Any]], list[str]]:
    return key_rows(_database()), users_of_default()


async def page(request: Request, *, status: int = 200, **extra: Any) -> Response:
    rows, default_users = await call(_rows)
    base = {"form": {}, "error": None, "field": None, "secret": None, "created": None}
    return render(request, "keys.html", status, rows=rows, console_key=CONSOLE_KEY,
                  default_users=default_users, **{**base, **extra})


async def create(request: Request) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        secret = await call(_create, form)
    except LlmnestError as exc:
        return await page(request, status=http_status(exc), form=form, error=in_page_words(exc.message, KEY_LABELS),
                          field=field_of(exc.message, KEY_FIELDS) or "name")
    return await page(request, secret=secret, created=form.get("name", "").strip())


async def edit(request: Request) -> Response:
    """GET: the key's limits in a form; POST: change them (the secret stays the same)."""
    from ..gateway import keys

    name = request.path_params["name"]
    if request.method == "GET":
        try:
            key = await call(lambda: keys.get(_database(), name))
        except LlmnestError as exc:
            return render(request, "error.html", http_status(exc), message=exc.message)
        return render(request, "key_edit.html", name=name, form=_form_of(key), error=None, field=None)
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        await call(_update, name, form)
    except LlmnestError as exc:
        return render(request, "key_edit.html", http_status(exc), name=name, form=form,
                      error=in_page_words(exc.message, KEY_LABELS), field=field_of(exc.message, KEY_FIELDS))
    return RedirectResponse("/keys", status_code=303)


async def revoke(request: Request) -> Response:
    from ..gateway import keys

    name = request.path_params["name"]
    if name == CONSOLE_KEY:
        return render(request, "error.html", 409, message=f"{CONSOLE_KEY} is the console's own key (Playground, "
                      "Benchmarks); it is not revoked from here")
    try:
        await call(lambda: keys.revoke(_database(), name))
    except LlmnestError as exc:
        return render(request, "error.html", http_status(exc), message=exc.message)
    return RedirectResponse("/keys", status_code=303)


def _usage(by: str, since: str) -> list[dict[str, Any]]:
    from ..gateway import usage

    return usage.summarize(_database(), by, usage.parse_since(since))


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
    try:
        rows = await call(_usage, by, since)
        charts = usage_charts(rows, by, usage.parse_since(since), time.time())
        error = None
    except LlmnestError as exc:
        rows, charts, error = [], [], exc.message
    return render(request, "usage.html", rows=rows, by=by, since=since, error=error, charts=charts,
                  console_key=CONSOLE_KEY)


async def usage_csv(request: Request) -> Response:
    from ..gateway import usage

    by = request.query_params.get("by", "day")
    since = request.query_params.get("since", "7d")
    try:
        rows = await call(_usage, by, since)
    except LlmnestError as exc:
        return Response(exc.message + "\n", status_code=http_status(exc), media_type="text/plain")
    return Response(usage.to_csv(rows), media_type="text/csv",
                    headers={"content-disposition": f'attachment; filename="usage-by-{by}.csv"'})
