"""Ready-to-paste examples for an endpoint: curl, Python `openai`, Chatbox settings."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict

from .endpoints import Endpoint


def curl_example(ep: Endpoint) -> str:
    body = json.dumps({"model": ep.model, "messages": [{"role": "user", "content": "Who are you?"}]})
    lines = [f"curl {ep.base_url}/chat/completions \\", '  -H "Content-Type: application/json" \\']
    if ep.api_key:
        lines.append(f'  -H "Authorization: Bearer {ep.api_key}" \\')
    lines.append(f"  -d {shlex.quote(body)}")
    return "\n".join(lines)


def python_example(ep: Endpoint) -> str:
    key = repr(ep.api_key or "EMPTY")
    return "\n".join([
        "from openai import OpenAI",
        "",
        f"client = OpenAI(base_url={ep.base_url!r}, api_key={key})",
        "reply = client.chat.completions.create(",
        f"    model={ep.model!r},",
        '    messages=[{"role": "user", "content": "Who are you?"}],',
        ")",
        "print(reply.choices[0].message.content)",
    ])


def chatbox_settings(ep: Endpoint) -> dict[str, str]:
    """The fields of Chatbox's custom provider form, as the seed's table lists them."""
    return {
        "Model provider": "Add custom provider (OpenAI API compatible)",
        "Name": "llmnest",
        "API host": ep.api_host,
        "API path": "/v1/chat/completions",
        "API key": ep.api_key or "(none)",
        "Model": ep.model,
    }


def as_dict(ep: Endpoint) -> dict[str, object]:
    return {**asdict(ep), "curl": curl_example(ep), "python": python_example(ep), "chatbox": chatbox_settings(ep)}
