"""What a benchmark sends to: a URL as given, or a deployment's endpoint, key, model, tokenizer and price."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BadInput


@dataclass(frozen=True)
class BenchEndpoint:
    base_url: str
    api_key: str | None
    model: str | None
    tokenizer: str | None
    price_per_hour: float | None
    deployment: str | None


def resolve_endpoint(name: str | None, base_url: str | None, api_key: str | None, model: str | None,
                     tokenizer: str | None, price: float | None, say: Callable[[str], None]) -> BenchEndpoint:
    """A URL as given, or a deployment's URL (its first endpoint), key, served model, weights folder
    (the tokenizer) and hourly price."""
    if base_url:
        if name:
            raise BadInput("give a deployment NAME or --base-url, not both")
        return BenchEndpoint(base_url.rstrip("/"), api_key, model, tokenizer, price, None)
    from .. import lifecycle, state

    dep = state.get(state.resolve_name(name))
    spec = dep.spec
    key = api_key or state.api_key(dep.name)
    endpoints = lifecycle.endpoints(dep, key)
    if not endpoints:
        raise BadInput(f"deployment {dep.name!r} has no endpoint yet (status {dep.status}); see `llmnest status {dep.name}`")
    return BenchEndpoint(
        endpoints[0].base_url.rstrip("/"),
        key,
        model or spec.served_model_name,
        tokenizer or spec.model_path or _catalog_tokenizer(spec.model, say),
        price if price is not None else lifecycle.price_per_hour(dep),
        dep.name,
    )


def _catalog_tokenizer(model: str, say: Callable[[str], None]) -> str | None:
    """The tokenizer folder of a catalog model whose weights are elsewhere (a cloud deployment)."""
    from ..catalog import find_model
    from ..sources import fetch_tokenizer

    entry = find_model(model)
    return str(fetch_tokenizer(entry, say)) if entry else None
