"""Deploy: a model from the catalog, a target and options; the plan before anything starts (fits or
not and why, the arithmetic, KV tokens, concurrency; for the cloud the instance types that fit with
their price and the dry-run); then `up` as a job, its phases live, ending on endpoint, key (once) and examples."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .. import lifecycle, state
from ..spec_builder import UpRequest
from ..catalog import load_catalog
from ..errors import BadInput, LlmnestError
from ..host import check_host
from ..spec import parse_sets
from ..targets import Context, registry
from .jobs import Job
from .web import call, field_of, http_status, in_page_words, render

TARGET_OPTIONS = [(d, o) for d in registry.declarations() for o in d.options if o.label]  # on the form
FIELDS = {"sets": ("--set",), "port": ("--port",), "max_model_len": ("--max-model-len", "max_model_len", "max-model-len"),
          "name": ("--name",), "engine": ("--engine", "engine"), "runtime": ("--runtime", "runtime"),
          "host": ("--host", "--insecure", "--no-api-key"), **{o.field: (o.flag,) for _, o in TARGET_OPTIONS},
          "timeout": ("--timeout",), "target": ("--target",), "model": ("model", "MODEL")}


# What the CLI's messages call a field, as the page labels it.
PAGE_WORDS = {"--max-model-len": "Max model length", "--runtime": "Runtime", "--engine": "Engine",
              "--port": "Port", "--name": "Name", "--host": "Host", "--set": "More settings", "--timeout": "Timeout",
              "--force": "\"start even if the memory plan says it does not fit\"", "--target": "Target",
              "--no-gateway": "no gateway", "--weights": "Weights",
              **{o.flag: o.label for _, o in TARGET_OPTIONS if o.kind is not bool}}
NUMBERS = {"port": ("Port", 1, 65535), "max_model_len": ("Max model length", 1, 10**7),
           **{o.field: (o.label, o.min or 0, o.max or 10**7) for _, o in TARGET_OPTIONS if o.kind is int}}


def _target_forms() -> list[dict[str, Any]]:
    """Each target's fieldset: its place, whether it asks to accept a price, its options that are on the form."""
    return [{"name": d.name, "place": d.place, "paid": d.paid, "fields": [
        {"field": o.field, "label": o.label, "kind": o.kind.__name__, "placeholder": o.placeholder}
        for o in d.options if o.label]} for d in registry.declarations()]


def page_words(message: str) -> str:
    """A CLI error line in the page's words: `pass --port` reads `change Port`."""
    for flag in PAGE_WORDS:
        message = re.sub(rf"\b(pass|pick another|give) (?={re.escape(flag)}(?![\w-]))", "change ", message)
    return in_page_words(message, PAGE_WORDS)


def _int(form: dict[str, str], key: str) -> int | None:
    label, low, high = NUMBERS[key]
    text = form.get(key, "").strip()
    if not text:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise BadInput(f"{label} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


def form_errors(form: dict[str, str]) -> dict[str, str]:
    """Each field's own mistake, all at once (numbers out of range, a name or host that cannot be used)."""
    errors: dict[str, str] = {}
    for key in NUMBERS:
        try:
            _int(form, key)
        except BadInput as exc:
            errors[key] = exc.message
    name = form.get("name", "").strip()
    if name and name in state.names():
        errors["name"] = f"a deployment named {name!r} exists; pick another Name, or change it from its page"
    here = _target(form) in registry.names() and registry.declaration(_target(form)).serves_on is None
    if here and (host := form.get("host", "").strip()):
        try:
            check_host(host)
        except BadInput as exc:
            errors["host"] = page_words(exc.message)
    return errors


def _target(form: dict[str, str]) -> str:
    return form.get("target") or registry.DEFAULT


def request_from(form: dict[str, str]) -> UpRequest:
    """The form as `llmnest up` options; what is wrong is the same one line the CLI prints."""
    target = _target(form)
    options: dict[str, Any] = {}
    on_form = [o for o in registry.declaration(target).options if o.label] if target in registry.names() else []
    for opt in on_form:  # another target's fields stay in the page, hidden, and are not sent on
        value = (bool(form.get(opt.field)) or None if opt.kind is bool else
                 _int(form, opt.field) if opt.kind is int else form.get(opt.field, "").strip() or None)
        if value is not None:
            options[opt.field] = value
    return UpRequest(
        model=form.get("model", "").strip(), name=form.get("name", "").strip() or None,
        engine=form.get("engine") or None, runtime=form.get("runtime") or None, host=form.get("host", "").strip() or None,
        port=_int(form, "port") or 8080,
        max_model_len=_int(form, "max_model_len"),
        sets=parse_sets([s.strip() for s in form.get("sets", "").splitlines() if s.strip()]),
        weights=form.get("weights", "").strip() or None, target=target, options=options,
    )


def checked(form: dict[str, str]) -> tuple[UpRequest, Any]:
    """The request and its resolved spec after every check `up` makes before it starts anything (on this
    machine: name, host, port, engine installed, the memory plan); the first refusal raises."""
    req = request_from(form)
    return req, lifecycle.check(req, Context(force=bool(form.get("force"))))


def _catalog() -> list[dict[str, Any]]:
    return [{"key": m.key, "name": m.display_name, "params_b": round(m.params / 1e9, 2), "dtype": m.dtype,
             "context": m.context_length, "max_model_len": m.max_model_len, "reasoning": m.reasoning,
             "demo": m.is_demo} for m in load_catalog().values()]


def _page(request: Request, status: int = 200, **context: Any) -> Response:
    base = {"models": _catalog(), "targets": registry.names(), "default_target": registry.DEFAULT,
            "elsewhere": [d.name for d in registry.declarations() if d.serves_on],  # Runtime, Host: this machine's
            "target_forms": _target_forms(), "form": {}, "errors": {}, "plan": None}
    return render(request, "deploy.html", status, **{**base, **context})


async def _plan_or_none(form: dict[str, str]) -> dict[str, Any] | None:
    """The plan the page showed, kept beside a refused form (None when the form cannot be planned)."""
    try:
        return await call(plan_for, form)
    except (LlmnestError, ValueError):
        return None


def plan_for(form: dict[str, str]) -> dict[str, Any]:
    """What the page shows before deploying: the memory plan here, or the cloud's fitting types and dry-run."""
    return lifecycle.plan(request_from(form))


async def plan(request: Request) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        result = await call(plan_for, form)
        return render(request, "plan_fragment.html", result=result, error=None, field=None)
    except LlmnestError as exc:
        return render(request, "plan_fragment.html", http_status(exc), result=None, error=page_words(exc.message),
                      field=field_of(exc.message, FIELDS))


def _up(job: Job, req: UpRequest, ctx: Context) -> None:
    created = lifecycle.up(req, ctx)
    job.deployment = created.deployment.name
    info = lifecycle.summary(created.deployment, "YOUR_API_KEY" if created.api_key else None, created.extra)
    job.secret = created.api_key
    job.result = {"message": f"{created.deployment.name} answers ({created.seconds:.0f} s to ready)",
                  "link": f"/deployments/{created.deployment.name}", "base_url": info["base_url"],
                  "model": info["served_model_name"], "endpoints": info["endpoints"]}


async def page(request: Request) -> Response:
    if request.method == "GET":
        return _page(request, form={"model": request.query_params.get("model", "")})
    form = {k: str(v) for k, v in (await request.form()).items()}
    errors = await call(form_errors, form)
    if errors:
        return _page(request, 409 if "name" in errors else 400, form=form, errors=errors,
                     plan=await _plan_or_none(form))
    try:
        if registry.declaration(_target(form)).paid and not form.get("yes"):
            raise BadInput("a cloud deployment creates paid resources: tick the box that accepts the price")
        req, resolved = await call(checked, form)  # bad input or a refusal: nothing starts
    except LlmnestError as exc:
        field = field_of(exc.message, FIELDS) or ("yes" if "paid" in exc.message else "")
        return _page(request, http_status(exc), form=form, errors={field: page_words(exc.message)},
                     plan=await _plan_or_none(form))
    timeout = float(form.get("timeout") or 1800)
    job = request.app.state.jobs.start("up", resolved.spec.name, lambda j: _up(j, req, Context(
        say=j.say, on_phase=j.on_phase, timeout=timeout, force=bool(form.get("force")), yes=bool(form.get("yes")))))
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)
