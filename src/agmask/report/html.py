"""Small HTML builders: escaped text, tables, inline figures. No JavaScript, no external assets."""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

MAX_JSON_BYTES = 64_000  # bigger JSON files are listed, not tabulated
MAX_JSON_ROWS = 60


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def cell(value) -> str:
    """A table cell for a JSON value: numbers rounded, None as n/a, short lists inline."""
    if value is None:
        return '<span class="na">n/a</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return esc(value)
        return esc(f"{value:.4g}")
    if isinstance(value, (list, dict)):
        text = json.dumps(_rounded(value), ensure_ascii=False)
        return esc(text if len(text) <= 160 else text[:157] + "...")
    return esc(value)


def _rounded(value):
    """JSON with floats at 4 significant digits, for display."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def table(header: list[str], rows: list[list], cls: str = "") -> str:
    """Rows are pre-rendered cells (use `cell()`), or raw values that get `cell()` applied."""
    if not rows:
        return ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Raw) else cell(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Raw(str):
    """Already-escaped HTML for a table cell."""


def figure(path: Path, caption: str | None = None) -> str:
    """A PNG inlined as base64 with its caption (the file name by default)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    caption = caption or Path(path).name
    return (f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>' if body.strip() else ""


def flatten(data, prefix: str = "") -> list[tuple[str, object]]:
    """Nested JSON -> (dotted key, scalar or short list) rows."""
    if isinstance(data, dict):
        rows = []
        for k, v in data.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(data, list) and any(isinstance(v, (dict, list)) for v in data):
        rows = []
        for i, v in enumerate(data):
            rows += flatten(v, f"{prefix}[{i}]")
        return rows
    return [(prefix or "(value)", data)]


def json_table(path: Path) -> str:
    """A small JSON file as a key/value table (capped), or a note that it is too big to show."""
    size = path.stat().st_size
    name = esc(path.name)
    if size > MAX_JSON_BYTES:
        return f'<p class="note">{name}: {size / 1000:.0f} kB, not shown.</p>'
    try:
        rows = flatten(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        return f'<p class="note">{name}: unreadable ({esc(e)}).</p>'
    more = len(rows) - MAX_JSON_ROWS
    out = f"<h4>{name}</h4>" + table(["key", "value"], [[k, v] for k, v in rows[:MAX_JSON_ROWS]], "kv")
    return out + (f'<p class="note">{more} more rows in {name}.</p>' if more > 0 else "")
