"""Reading docs/RESULTS.md pages back in tests: the tables under a heading."""
from __future__ import annotations


def section_table(page: str, heading: str, nth: int = 0) -> list[dict[str, str]]:
    """The `nth` markdown table under `heading` (a line of '#'s and the title), as rows of {column: cell}."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and line.lstrip("#").strip() == heading)
    tables, rows = [], []
    for line in lines[start + 1:] + [""]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
        elif rows:
            tables.append(rows)
            rows = []
    header, body = tables[nth][0], tables[nth][2:]  # [1] is the |---| rule
    return [dict(zip(header, row)) for row in body]
