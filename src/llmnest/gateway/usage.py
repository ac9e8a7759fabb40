"""Usage: one row per request (key, model, replica, tokens from the engine's own `usage`, timings,
status), and summaries of them by key, model, day or hour."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
import time
from dataclasses import astuple, dataclass, fields
from typing import Any

from ..errors import BadInput
from .db import Database

BY = ("key", "model", "day", "hour")
COLUMNS = ("period", "key_name", "model", "requests", "errors", "prompt_tokens", "completion_tokens",
           "mean_latency_s", "mean_ttft_s")


@dataclass
class Usage:
    """One request as the gateway saw it."""

    key_name: str
    model: str
    replica: str | None
    endpoint: str
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float | None = None
    ttft_s: float | None = None
    ts: float = 0.0


def record(db: Database, *rows: Usage) -> None:
    """Store the rows in one transaction."""
    now = time.time()
    for row in rows:
        row.ts = row.ts or now
    names = ", ".join(f.name for f in fields(Usage))
    with db.transaction() as cur:
        cur.executemany(db._sql(f"INSERT INTO usage ({names}) VALUES ({', '.join('?' * len(fields(Usage)))})"),
                        [astuple(row) for row in rows])


class Writer:
    """Stores usage rows from the event loop on a worker thread. Rows that come while a write is under
    way go together in the next one: one commit and one thread hand-off for many finished requests."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._rows: list[Usage] = []
        self._stored: asyncio.Future[None] | None = None  # resolves when the waiting rows are committed
        self._writing: asyncio.Task[None] | None = None

    async def write(self, row: Usage) -> None:
        """Returns once the row is committed."""
        self._rows.append(row)
        if self._stored is None:
            self._stored = asyncio.get_running_loop().create_future()
        stored = self._stored
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write_all())
        await asyncio.shield(stored)

    async def _write_all(self) -> None:
        try:
            while self._rows:
                rows, stored, self._rows, self._stored = self._rows, self._stored, [], None
                assert stored is not None
                try:
                    await asyncio.to_thread(record, self.db, *rows)
                except Exception as exc:  # noqa: BLE001  (each waiter of this batch raises it)
                    stored.set_exception(exc)
                    stored.exception()  # (retrieved: a waiter that has gone must not warn)
                else:
                    stored.set_result(None)
        finally:
            self._writing = None


def parse_since(text: str) -> float:
    """`7d`, `24h`, `30m`, `90s` ago, or an ISO date (UTC): the start of a window as a timestamp."""
    if m := re.fullmatch(r"(\d+)\s*([smhd])", text.strip()):
        return time.time() - int(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--since {text!r} is not a window; use e.g. 7d, 24h, 30m or a date YYYY-MM-DD") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()


def period_start(period: str, now: float | None = None) -> float:
    """The start (UTC) of the current budget period: today or this month."""
    t = dt.datetime.fromtimestamp(now or time.time(), dt.timezone.utc)
    start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    return (start.replace(day=1) if period == "month" else start).timestamp()


def period_end(period: str, now: float | None = None) -> float:
    start = dt.datetime.fromtimestamp(period_start(period, now), dt.timezone.utc)
    if period == "day":
        return (start + dt.timedelta(days=1)).timestamp()
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1).timestamp()


def tokens_since(db: Database, key_name: str, since: float) -> int:
    """Prompt + completion tokens a key used since a time (budgets count both)."""
    rows = db.query("SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS t FROM usage"
                    " WHERE key_name = ? AND ts >= ?", (key_name, since))
    return int(rows[0]["t"])


def totals_by_key(db: Database, since: float = 0.0) -> dict[str, dict[str, int]]:
    rows = db.query("SELECT key_name, COUNT(*) AS requests, COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens,"
                    " COALESCE(SUM(completion_tokens), 0) AS completion_tokens FROM usage WHERE ts >= ?"
                    " GROUP BY key_name", (since,))
    return {r["key_name"]: {k: int(r[k]) for k in ("requests", "prompt_tokens", "completion_tokens")} for r in rows}


def summarize(db: Database, by: str = "key", since: float = 0.0) -> list[dict[str, Any]]:
    """Rows with every COLUMNS field; key_name or model is '*' when the grouping sums over it."""
    if by not in BY:
        raise BadInput(f"--by must be one of {', '.join(BY)}, not {by!r}")
    whole = "CAST(ts AS INTEGER)" if db.kind == "sqlite" else "FLOOR(ts)::bigint"
    size = 86400 if by == "day" else 3600
    period = f"({whole} / {size}) * {size}" if by in ("day", "hour") else "NULL"
    key_col = "'*'" if by == "model" else "key_name"
    model_col = "'*'" if by == "key" else "model"
    group = {"key": "key_name", "model": "model"}.get(by, "1, key_name, model")
    rows = db.query(
        f"SELECT {period} AS period, {key_col} AS key_name, {model_col} AS model, COUNT(*) AS requests,"
        " SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors,"
        " SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens,"
        " AVG(latency_s) AS mean_latency_s, AVG(ttft_s) AS mean_ttft_s"
        f" FROM usage WHERE ts >= ? GROUP BY {group} ORDER BY {group}", (since,))
    out = []
    for r in rows:
        when = r["period"]
        fmt = "%Y-%m-%d" if by == "day" else "%Y-%m-%dT%H:00Z"
        out.append({
            **r,
            "period": dt.datetime.fromtimestamp(int(when), dt.timezone.utc).strftime(fmt) if when is not None else None,
            **{k: int(r[k] or 0) for k in ("requests", "errors", "prompt_tokens", "completion_tokens")},
            **{k: (round(float(r[k]), 4) if r[k] is not None else None) for k in ("mean_latency_s", "mean_ttft_s")},
        })
    return out


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
