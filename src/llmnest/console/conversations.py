"""The playground's conversations, kept in a SQLite file under $LLMNEST_HOME (0600) so a reload or another
browser finds them again: a title, and per pane the deployment, its parameters and its messages."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import BadInput, NotFound
from ..home import home

MAX_BYTES = 2_000_000  # one conversation's document
KEPT = 200  # the newest conversations; older ones are dropped


def db_path() -> Path:
    return home() / "console_conversations.sqlite"


@contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    path = db_path()
    fresh = not path.exists()
    conn = sqlite3.connect(path, timeout=10)
    if fresh:
        os.chmod(path, 0o600)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL,"
                     " updated_at REAL NOT NULL, doc TEXT NOT NULL)")
        with conn:
            yield conn
    finally:
        conn.close()


def listed() -> list[dict[str, Any]]:
    """The conversations, newest first: id, title, updated_at (no messages)."""
    with _db() as conn:
        rows = conn.execute("SELECT id, title, updated_at FROM conversations ORDER BY updated_at DESC").fetchall()
    return [{"id": r[0], "title": r[1], "updated_at": r[2]} for r in rows]


def load(conv_id: str) -> dict[str, Any]:
    with _db() as conn:
        row = conn.execute("SELECT doc FROM conversations WHERE id = ?", (conv_id,)).fetchone()
    if row is None:
        raise NotFound(f"no conversation {conv_id!r}; it may have been deleted")
    return {**json.loads(row[0]), "id": conv_id}


def _checked(doc: Any) -> dict[str, Any]:
    """A conversation as the page sends it: a title and panes of {deployment, params, messages}."""
    if not isinstance(doc, dict) or not isinstance(doc.get("panes"), list) or not 1 <= len(doc["panes"]) <= 2:
        raise BadInput("a conversation is {title, panes: [{deployment, params, messages}]} with one or two panes")
    for pane in doc["panes"]:
        messages = pane.get("messages") if isinstance(pane, dict) else None
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
                for m in messages):
            raise BadInput("each pane's messages must be a list of {role: user|assistant, content}")
    title = str(doc.get("title") or "").strip()[:120] or "untitled"
    return {"title": title, "side_by_side": bool(doc.get("side_by_side")),
            "panes": [{"deployment": str(p.get("deployment") or ""), "params": p.get("params") or {},
                       "messages": [{"role": m["role"], "content": m["content"],
                                     **({"finish_reason": m["finish_reason"]} if m.get("finish_reason") else {})}
                                    for m in p["messages"]]} for p in doc["panes"]]}


def save(conv_id: str | None, doc: Any) -> str:
    """Store (a new id when None); returns the id."""
    clean = _checked(doc)
    text = json.dumps(clean)
    if len(text) > MAX_BYTES:
        raise BadInput(f"this conversation is over {MAX_BYTES // 1_000_000} MB; start a new chat")
    conv_id = conv_id or secrets.token_hex(8)
    if not conv_id.isalnum() or len(conv_id) > 32:
        raise BadInput("a conversation id is letters and digits")
    with _db() as conn:
        conn.execute("INSERT INTO conversations (id, title, updated_at, doc) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO "
                     "UPDATE SET title = excluded.title, updated_at = excluded.updated_at, doc = excluded.doc",
                     (conv_id, clean["title"], time.time(), text))
        conn.execute("DELETE FROM conversations WHERE id NOT IN "
                     "(SELECT id FROM conversations ORDER BY updated_at DESC LIMIT ?)", (KEPT,))
    return conv_id


def delete(conv_id: str) -> None:
    with _db() as conn:
        conn.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))
