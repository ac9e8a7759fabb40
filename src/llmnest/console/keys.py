"""Keys and usage of the gateway (its database layer, as `llmnest keys` and `llmnest usage` use it):
create (the secret shown once, in the answer to the form), change limits, revoke; usage per key, model,
day or hour as a chart, a table and CSV."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..cli.keys_cmd import key_rows
from ..errors import LlmnestError
from .charts import bar_chart
from .web import call, field_of, http_status, render

KEY_FIELDS = {"name": ("key name", "name"), "models": ("--models",), "rpm": ("--rpm",), "tpm": ("--tpm",),
              "max_concurrency": ("--max-concurrency",), "token_budget": ("--token-budget",),
              "budget_period": ("--budget-period",), "expires": ("--expires",)}
LIMITS = ("rpm", "tpm", "max_concurrency", "token_budget")


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


async def page(request: Request, *, status: int = 200, **extra: Any) -> Response:
    rows = await call(lambda: key_rows(_database()))
    base = {"form": {}, "error": None, "field": None, "secret": None, "created": None}
    return render(request, "keys.html", status, rows=rows, **{**base, **extra})


async def create(request: Request) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        secret = await call(_create, form)
    except LlmnestError as exc:
        return await page(request, status=http_status(exc), form=form, error=exc.message,
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
        return render(request, "key_edit.html", http_status(exc), name=name, form=form, error=exc.message,
                      field=field_of(exc.message, KEY_FIELDS))
    return RedirectResponse("/keys", status_code=303)


async def revoke(request: Request) -> Response:
    from ..gateway import keys

    name = request.path_params["name"]
    try:
        await call(lambda: keys.revoke(_database(), name))
    except LlmnestError as exc:
        return render(request, "error.html", http_status(exc), message=exc.message)
    return RedirectResponse("/keys", status_code=303)


def _usage(by: str, since: str) -> list[dict[str, Any]]:
    from ..gateway import usage

    return usage.summarize(_database(), by, usage.parse_since(since))


def _label(row: dict[str, Any], by: str) -> str:
    return {"key": row["key_name"], "model": row["model"]}.get(by) or f"{row['period']} {row['key_name']}"


async def usage_page(request: Request) -> Response:
    by = request.query_params.get("by", "day")
    since = request.query_params.get("since", "7d")
    try:
        rows = await call(_usage, by, since)
        error = None
    except LlmnestError as exc:
        rows, error = [], exc.message
    tokens = [(_label(r, by), {"prompt": r["prompt_tokens"], "completion": r["completion_tokens"]}) for r in rows]
    requests = [(_label(r, by), {"requests": r["requests"], "errors": r["errors"]}) for r in rows]
    charts = [bar_chart("Tokens", tokens), bar_chart("Requests", requests)] if rows else []
    return render(request, "usage.html", rows=rows, by=by, since=since, error=error, charts=charts)


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
