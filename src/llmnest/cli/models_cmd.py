"""`llmnest models`: the catalog."""

from __future__ import annotations

import typer
from rich.table import Table

from ..catalog import load_catalog
from .output import console, handle_errors, print_json


@handle_errors
def models(json_out: bool = typer.Option(False, "--json", help="Print the catalog as JSON.")) -> None:
    """List the model catalog: ids, size, architecture and serving defaults."""
    catalog = load_catalog()
    if json_out:
        print_json([m.model_dump() for m in catalog.values()])
        return
    table = Table("model", "params", "arch", "layers", "heads (kv)", "context", "default len", "reasoning")
    for m in catalog.values():
        table.add_row(
            m.key + (" [demo]" if m.is_demo else ""),
            f"{m.params / 1e9:.2f}B" if m.params >= 1e9 else f"{m.params / 1e6:.0f}M",
            m.arch + (f" {m.experts}x{m.experts_per_token}" if m.experts else ""),
            str(m.layers),
            f"{m.attention_heads} ({m.kv_heads})",
            f"{m.context_length:,}",
            f"{m.max_model_len:,}",
            m.reasoning or "",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
