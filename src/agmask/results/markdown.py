"""Markdown pieces for docs/RESULTS.md: numbers, before -> after pairs, intervals, tables (tabulate)."""
from __future__ import annotations

import math
from typing import Any

from tabulate import tabulate

LIST_CELL = 8  # a longer list of numbers (per-prompt values) is shown as its length


def num(v: Any) -> str:
    """A number as a reader wants it: 3 decimals, more for small values, none for whole ones; `-` for None."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v == 0 or v.is_integer():
            return str(int(v))
        if abs(v) < 1e-3 or abs(v) >= 1e6:
            return f"{v:.2g}"
        spec = ".4f" if abs(v) < 0.1 else ".3f"
        return format(v, spec).rstrip("0").rstrip(".")
    return str(v)


def arrow(base: Any, adapted: Any) -> str:
    return f"{num(base)} → {num(adapted)}"


def interval(ci: dict | None) -> str:
    """`[low, high]` of a bootstrap interval (agmask.evaluate.intervals), or `-` when undefined."""
    if not ci or ci.get("low") is None:
        return "-"
    return f"[{num(ci['low'])}, {num(ci['high'])}]"


def cell(v: Any) -> str:
    text = num(v) if not isinstance(v, str) else v
    return text.replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table; cells are formatted with `num`, pipes escaped."""
    return tabulate([[cell(c) for c in row] for row in rows], headers=[cell(h) for h in headers],
                    tablefmt="github", disable_numparse=True)


def code(text: str) -> str:
    """Inline code that survives backticks inside the text."""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as `a.b.c` keys; {mean, sd|std} pairs as one `mean ± sd` text; lists of scalars joined."""
    if isinstance(data, dict):
        spread = data.get("sd", data.get("std"))
        if "mean" in data and spread is not None and set(data) <= {"mean", "sd", "std", "n", "values"}:
            return {prefix: f"{num(data['mean'])} ± {num(spread)}"}
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, list):
        if all(not isinstance(v, (dict, list)) for v in data):
            return {prefix: ", ".join(num(v) for v in data) if len(data) <= LIST_CELL else f"({len(data)} values)"}
        return {prefix: f"({len(data)} entries)"}
    return {prefix: data}


def key_table(data: dict, limit: int = 60) -> str:
    """A flattened JSON object as a two-column table (first `limit` keys)."""
    flat = list(flatten(data).items())
    rows = [[k, v] for k, v in flat[:limit]]
    note = f"\n\n({len(flat) - limit} more keys in the file)" if len(flat) > limit else ""
    return table(["key", "value"], rows) + note


def records_table(records: list[dict], first: str | None = None) -> str:
    """Rows of flattened JSON objects under the union of their keys (`first` as the leading column)."""
    flat = [flatten(r) for r in records]
    columns = list(dict.fromkeys(k for row in flat for k in row))
    if first in columns:
        columns.remove(first)
        columns.insert(0, first)
    return table(columns, [[row.get(c) for c in columns] for row in flat])
