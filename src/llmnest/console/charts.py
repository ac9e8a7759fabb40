"""Stacked bar charts as inline SVG, drawn on the server: no chart library, nothing to download."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

COLORS = ("#2f6fdb", "#f29e38", "#3aa76d", "#c8486d")
WIDTH, BAR_H, GAP, LEFT, RIGHT = 760, 22, 8, 220, 90


def bar_chart(title: str, bars: Sequence[tuple[str, dict[str, int]]]) -> str:
    """One horizontal stacked bar per label; the series (dict keys) share colours and a legend."""
    series = list(dict.fromkeys(k for _, parts in bars for k in parts))
    top = max((sum(p.values()) for _, p in bars), default=0) or 1
    span = WIDTH - LEFT - RIGHT
    height = 40 + len(bars) * (BAR_H + GAP)
    out = [(f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {height}" '
            f'width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">'),
           f'<text x="0" y="16" class="chart-title">{escape(title)}</text>']
    x = LEFT
    for i, name in enumerate(series):
        out.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{COLORS[i % len(COLORS)]}"/>'
                   f'<text x="{x + 16}" y="16">{escape(name)}</text>')
        x += 30 + 8 * len(name)
    for row, (label, parts) in enumerate(bars):
        y = 32 + row * (BAR_H + GAP)
        shown = label if len(label) <= 30 else label[:29] + "…"
        out.append(f'<text x="{LEFT - 8}" y="{y + 15}" text-anchor="end"><title>{escape(label)}</title>'
                   f'{escape(shown)}</text>')
        x0 = float(LEFT)
        for i, name in enumerate(series):
            w = span * parts.get(name, 0) / top
            if w > 0:
                out.append(f'<rect x="{x0:.1f}" y="{y}" width="{w:.1f}" height="{BAR_H}" '
                           f'fill="{COLORS[i % len(COLORS)]}"><title>{escape(name)}: {parts[name]:,}</title></rect>')
            x0 += w
        out.append(f'<text x="{x0 + 6:.1f}" y="{y + 15}">{sum(parts.values()):,}</text>')
    out.append("</svg>")
    return "".join(out)  # every text in it is escaped


def column_chart(title: str, columns: Sequence[tuple[str, dict[str, int]]], every: int = 1) -> str:
    """A time series: one stacked column per period, left to right, with a label every `every` columns
    and the top of the scale written on the axis."""
    series = list(dict.fromkeys(k for _, parts in columns for k in parts))
    top = max((sum(p.values()) for _, p in columns), default=0) or 1
    width, height, left, right, bottom, plot_top = 760, 240, 48, 60, 40, 30  # right: room for the last label
    span_h = height - bottom - plot_top
    step = (width - left - right) / max(len(columns), 1)
    out = [(f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'),
           f'<text x="0" y="16" class="chart-title">{escape(title)}</text>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>',
           f'<text x="{left - 6}" y="{plot_top + 4}" text-anchor="end">{top:,}</text>',
           f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end">0</text>']
    x = left + 8 * len(title) + 20
    for i, name in enumerate(series):
        out.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{COLORS[i % len(COLORS)]}"/>'
                   f'<text x="{x + 16}" y="16">{escape(name)}</text>')
        x += 30 + 8 * len(name)
    for col, (label, parts) in enumerate(columns):
        x0 = left + col * step + step * 0.1
        y0 = float(height - bottom)
        for i, name in enumerate(series):
            h = span_h * parts.get(name, 0) / top
            if h > 0:
                y0 -= h
                out.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" '
                           f'fill="{COLORS[i % len(COLORS)]}"><title>{escape(label)} {escape(name)}: '
                           f'{parts[name]:,}</title></rect>')
        if col % every == 0:
            out.append(f'<text x="{x0:.1f}" y="{height - bottom + 16}">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
