"""Readiness that means "it answers": a real one-token chat completion, not just /health."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    stage: str  # "down" (no HTTP), "up" (HTTP answers, model does not yet), "ready", "unauthorized"
    detail: str = ""


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def chat_once(base_url: str, model: str, api_key: str | None, timeout: float = 30) -> ProbeResult:
    """POST one tiny chat completion (max_tokens=1) and classify the answer."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    try:
        resp = httpx.post(f"{base_url}/chat/completions", json=body, headers=auth_headers(api_key), timeout=timeout)
    except httpx.TransportError as exc:
        return ProbeResult(False, "down", type(exc).__name__)
    if resp.status_code == 401:
        return ProbeResult(False, "unauthorized", "HTTP 401: the API key was refused")
    if resp.status_code == 200 and resp.json().get("choices"):
        return ProbeResult(True, "ready")
    return ProbeResult(False, "up", f"HTTP {resp.status_code}: {resp.text[:200]}")


def healthy(base_url: str, timeout: float = 5) -> bool:
    """GET /health (the engine's liveness, no key needed) answers 200 within `timeout`."""
    try:
        return httpx.get(f"{base_url.removesuffix('/v1')}/health", timeout=timeout).status_code == 200
    except httpx.TransportError:
        return False
