"""Shared pieces of the pages: the templates, the error a field shows, running a library call off the event loop."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from ..errors import LlmnestError
from ..humanize import duration

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["duration"] = duration

STATUS_OF = {2: 400, 3: 409, 4: 404}  # the CLI's exit code -> an HTTP status


def render(request: Request, template: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"csrf": request.scope.get("state", {}).get("csrf", ""),
                                                      **context}, status_code=status)


def http_status(exc: LlmnestError) -> int:
    return STATUS_OF.get(exc.exit_code, 500)


def field_of(message: str, fields: dict[str, tuple[str, ...]]) -> str | None:
    """The form field an error line is about: the first whose flag or word the line names."""
    for name, words in fields.items():
        if any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", message) for w in words):
            return name
    return None


def in_page_words(message: str, labels: dict[str, str]) -> str:
    """A CLI error line with each `--flag` it names replaced by the label of the field the page shows."""
    for flag, label in labels.items():
        message = re.sub(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", label, message)
    return message


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A blocking library call (SQLite, a probe, a subprocess) without stalling other pages."""
    return await run_in_threadpool(fn, *args, **kwargs)
