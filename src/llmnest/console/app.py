"""The console's Starlette app: routes to the pages, the static files shipped in the package, the guard."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import auth, bench, deploy, deployments, keys, playground
from .guard import Guard
from .jobs import Jobs
from .web import HERE, templates


def _login_page(next_path: str, message: str) -> bytes:
    page = templates.get_template("login.html").render(next=next_path if next_path.startswith("/") else "/",
                                                       message=message, csrf="")
    return page.encode()


async def favicon(request: Request) -> Response:
    return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")


def create_app(token: str) -> Guard:
    """The console for `token` (see auth.load_or_create_token); wrap order: guard, then the routes."""

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return Response(_login_page(request.query_params.get("next", "/"), ""), media_type="text/html")
        form = await request.form()
        next_path = str(form.get("next") or "/")
        next_path = next_path if next_path.startswith("/") and not next_path.startswith("//") else "/"
        if not auth.same(str(form.get("token", "")).strip(), token):
            return Response(_login_page(next_path, "That token is not this console's."), status_code=401,
                            media_type="text/html")
        response = RedirectResponse(next_path, status_code=303)
        response.headers.append("set-cookie", auth.session_cookie(auth.session_value(token)))
        return response

    app = Starlette(routes=[
        Route("/", deployments.index),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/favicon.ico", favicon),
        Route("/api/deployments", deployments.rows_json),
        Route("/api/deployments/{name}/metrics", deployments.metrics_json),
        Route("/deployments/{name}", deployments.detail),
        Route("/deployments/{name}/logs", deployments.logs_page),
        Route("/deployments/{name}/logs/stream", deployments.logs_stream),
        Route("/deployments/{name}/{verb}", deployments.action, methods=["POST"]),
        Route("/jobs/{job_id}", deployments.job_page),
        Route("/api/jobs/{job_id}", deployments.job_json),
        Route("/deploy", deploy.page, methods=["GET", "POST"]),
        Route("/deploy/plan", deploy.plan, methods=["POST"]),
        Route("/playground", playground.page),
        Route("/api/chat", playground.chat, methods=["POST"]),
        Route("/api/conversations", playground.conversations_api, methods=["GET", "POST"]),
        Route("/api/conversations/{conv_id}", playground.conversation_api, methods=["GET", "PUT", "DELETE"]),
        Route("/keys", keys.page),
        Route("/keys/create", keys.create, methods=["POST"]),
        Route("/keys/{name}/revoke", keys.revoke, methods=["POST"]),
        Route("/keys/{name}", keys.edit, methods=["GET", "POST"]),
        Route("/usage", keys.usage_page),
        Route("/usage.csv", keys.usage_csv),
        Route("/bench", bench.page, methods=["GET", "POST"]),
        Route("/bench/runs/{run}", bench.run_page),
        Route("/bench/runs/{run}/charts/{chart}", bench.chart),
        Route("/bench/compare", bench.compare),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ])
    app.state.jobs = Jobs()
    return Guard(app, token, _login_page)
