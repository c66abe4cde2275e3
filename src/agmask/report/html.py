"""Table cells as HTML (the template's `cell` filter): numbers rounded, None as n/a, the markers of
`agmask.evaluate.tables` (bold, generated replies, several lines). Every value is escaped, here or by
the template's autoescape; the page itself is `templates/report.html.j2`."""
from __future__ import annotations

import json
import math

from markupsafe import Markup, escape

from agmask.evaluate.tables import Bold, Lines, Reply

NA = Markup('<span class="na">n/a</span>')


def cell(value) -> Markup:
    """A table cell for a JSON value or a cell marker."""
    if isinstance(value, Bold):
        return Markup("<b>%s</b>") % cell(value.value)
    if isinstance(value, Reply):
        hit = Markup(' <span class="hit">[answer]</span>') if value.hit else ""
        return Markup('<span class="gen">%s</span>%s') % (value.text, hit)
    if isinstance(value, Lines):
        return Markup("<br>").join(escape(v) for v in value.items)
    if value is None:
        return NA
    if isinstance(value, bool):
        return Markup("yes" if value else "no")
    if isinstance(value, float):
        return escape(value if math.isnan(value) or math.isinf(value) else f"{value:.4g}")
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(_rounded(value), ensure_ascii=False)
        return escape(text if len(text) <= 160 else text[:157] + "...")
    return escape(value)


def _rounded(value):
    """JSON with floats at 4 significant digits, for display."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


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
