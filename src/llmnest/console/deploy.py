"""Deploy: a model from the catalog, a target and options; the plan before anything starts (fits or
not and why, the arithmetic, KV tokens, concurrency; for the cloud the instance types that fit with
their price and the dry-run); then `up` as a job, its phases live, ending on endpoint, key (once) and examples."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .. import lifecycle, state, targets
from ..build import UpRequest
from ..catalog import load_catalog
from ..errors import BadInput, LlmnestError
from ..host import check_host
from ..spec import parse_sets
from ..targets import Context
from .jobs import Job
from .web import call, field_of, http_status, in_page_words, render

FIELDS = {"sets": ("--set",), "port": ("--port",), "max_model_len": ("--max-model-len", "max_model_len", "max-model-len"),
          "name": ("--name",), "engine": ("--engine", "engine"), "runtime": ("--runtime", "runtime"),
          "host": ("--host", "--insecure", "--no-api-key"), "region": ("--region",), "zone": ("--zone",),
          "instance_type": ("--instance-type",), "timeout": ("--timeout",), "target": ("--target",),
          "model": ("model", "MODEL"), "replicas": ("--replicas", "replicas")}
ALIYUN_OPTIONS = ("region", "zone", "instance_type", "allow_cidr")


# What the CLI's messages call a field, as the page labels it.
PAGE_WORDS = {"--max-model-len": "Max model length", "--instance-type": "Instance type", "--replicas": "Replicas",
              "--runtime": "Runtime", "--engine": "Engine", "--region": "Region", "--zone": "Zone",
              "--port": "Port", "--name": "Name", "--host": "Host", "--set": "More settings", "--timeout": "Timeout",
              "--force": "\"start even if the memory plan says it does not fit\"", "--target": "Target",
              "--no-gateway": "no gateway", "--weights": "Weights"}
NUMBERS = {"port": ("Port", 1, 65535), "replicas": ("Replicas", 1, 16), "max_model_len": ("Max model length", 1, 10**7)}


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
    if (form.get("target") or "local") == "local" and (host := form.get("host", "").strip()):
        try:
            check_host(host)
        except BadInput as exc:
            errors["host"] = page_words(exc.message)
    return errors


def request_from(form: dict[str, str]) -> UpRequest:
    """The form as `llmnest up` options; what is wrong is the same one line the CLI prints."""
    target = form.get("target") or "local"
    options: dict[str, Any] = {k: form[k].strip() for k in ALIYUN_OPTIONS if form.get(k, "").strip()}
    if form.get("public"):
        options["public"] = True
    if target != "aliyun" and options:
        options = {}  # the aliyun fields stay in the page, hidden, when another target is chosen
    if replicas := _int(form, "replicas"):
        options["replicas"] = replicas  # refused with one line for a target other than this machine
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
    target = targets.get(req.target)
    resolved = target.resolve(req)
    if req.target == "local":
        from ..targets.local.target import check_can_start, check_plan

        check_can_start(resolved.spec, Context())
        check_plan(resolved.spec, resolved.model, bool(form.get("force")))
    return req, resolved


def _catalog() -> list[dict[str, Any]]:
    return [{"key": m.key, "name": m.display_name, "params_b": round(m.params / 1e9, 2), "dtype": m.dtype,
             "context": m.context_length, "max_model_len": m.max_model_len, "reasoning": m.reasoning,
             "demo": m.is_demo} for m in load_catalog().values()]


def _page(request: Request, status: int = 200, **context: Any) -> Response:
    base = {"models": _catalog(), "targets": targets.names(), "form": {}, "errors": {}, "plan": None}
    return render(request, "deploy.html", status, **{**base, **context})


async def _plan_or_none(form: dict[str, str]) -> dict[str, Any] | None:
    """The plan the page showed, kept beside a refused form (None when the form cannot be planned)."""
    try:
        return await call(plan_for, form)
    except (LlmnestError, ValueError):
        return None


def plan_for(form: dict[str, str]) -> dict[str, Any]:
    """What the page shows before deploying: the memory plan here, or the cloud's fitting types and dry-run."""
    req = request_from(form)
    target = targets.get(req.target)
    resolved = target.resolve(req)
    spec, model = resolved.spec, resolved.model
    if req.target == "local":
        from ..host import host_facts
        from ..plan import plan_for_spec
        from ..plan.local import model_from_dir

        entry = model or model_from_dir(Path(spec.model_path or spec.model))
        plan = plan_for_spec(spec, entry, host_facts().gpus)
        return {"kind": "local", "spec": spec.name, "plan": plan.to_dict()}
    from ..plan import rank_instances

    fits = [{**f.to_dict(), "price_label": f.instance.price.label()}
            for f in rank_instances(model, spec.max_model_len)] if model else []
    dry = lifecycle.dry_run(req, Context(dry_run=True))
    return {"kind": "cloud", "spec": spec.name, "instances": fits, "preflight": dry.get("preflight", []),
            "template": yaml.safe_dump(dry.get("template"), sort_keys=False),
            "parameters": dry.get("parameters", {}), "bootstrap": dry.get("bootstrap_script", "")}


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
        if (form.get("target") or "local") == "aliyun" and not form.get("yes"):
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
